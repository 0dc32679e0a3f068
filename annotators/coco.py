"""COCO panoptic's 133 classes (80 things, 53 stuff) and the colours ControlNet 1.1's ``seg_ofcoco`` uses.

ControlNet 1.1's OneFormer COCO annotator draws ``sem_seg.argmax`` with detectron2's Visualizer at
opacity 1, coloured by the panoptic metadata's ``stuff_colors``: one colour per class, in the order
of panopticapi's ``panoptic_coco_categories.json`` (detectron2's ``COCO_CATEGORIES``). Index ``i``
is the model's output class ``i`` (transformers' ``shi-labs/oneformer_coco_*`` use the same order:
0 = person).
"""

from __future__ import annotations

import numpy as np

#: class index -> (name, (R, G, B))
COCO: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("person", (220, 20, 60)),  # 0
    ("bicycle", (119, 11, 32)),  # 1
    ("car", (0, 0, 142)),  # 2
    ("motorcycle", (0, 0, 230)),  # 3
    ("airplane", (106, 0, 228)),  # 4
    ("bus", (0, 60, 100)),  # 5
    ("train", (0, 80, 100)),  # 6
    ("truck", (0, 0, 70)),  # 7
    ("boat", (0, 0, 192)),  # 8
    ("traffic light", (250, 170, 30)),  # 9
    ("fire hydrant", (100, 170, 30)),  # 10
    ("stop sign", (220, 220, 0)),  # 11
    ("parking meter", (175, 116, 175)),  # 12
    ("bench", (250, 0, 30)),  # 13
    ("bird", (165, 42, 42)),  # 14
    ("cat", (255, 77, 255)),  # 15
    ("dog", (0, 226, 252)),  # 16
    ("horse", (182, 182, 255)),  # 17
    ("sheep", (0, 82, 0)),  # 18
    ("cow", (120, 166, 157)),  # 19
    ("elephant", (110, 76, 0)),  # 20
    ("bear", (174, 57, 255)),  # 21
    ("zebra", (199, 100, 0)),  # 22
    ("giraffe", (72, 0, 118)),  # 23
    ("backpack", (255, 179, 240)),  # 24
    ("umbrella", (0, 125, 92)),  # 25
    ("handbag", (209, 0, 151)),  # 26
    ("tie", (188, 208, 182)),  # 27
    ("suitcase", (0, 220, 176)),  # 28
    ("frisbee", (255, 99, 164)),  # 29
    ("skis", (92, 0, 73)),  # 30
    ("snowboard", (133, 129, 255)),  # 31
    ("sports ball", (78, 180, 255)),  # 32
    ("kite", (0, 228, 0)),  # 33
    ("baseball bat", (174, 255, 243)),  # 34
    ("baseball glove", (45, 89, 255)),  # 35
    ("skateboard", (134, 134, 103)),  # 36
    ("surfboard", (145, 148, 174)),  # 37
    ("tennis racket", (255, 208, 186)),  # 38
    ("bottle", (197, 226, 255)),  # 39
    ("wine glass", (171, 134, 1)),  # 40
    ("cup", (109, 63, 54)),  # 41
    ("fork", (207, 138, 255)),  # 42
    ("knife", (151, 0, 95)),  # 43
    ("spoon", (9, 80, 61)),  # 44
    ("bowl", (84, 105, 51)),  # 45
    ("banana", (74, 65, 105)),  # 46
    ("apple", (166, 196, 102)),  # 47
    ("sandwich", (208, 195, 210)),  # 48
    ("orange", (255, 109, 65)),  # 49
    ("broccoli", (0, 143, 149)),  # 50
    ("carrot", (179, 0, 194)),  # 51
    ("hot dog", (209, 99, 106)),  # 52
    ("pizza", (5, 121, 0)),  # 53
    ("donut", (227, 255, 205)),  # 54
    ("cake", (147, 186, 208)),  # 55
    ("chair", (153, 69, 1)),  # 56
    ("couch", (3, 95, 161)),  # 57
    ("potted plant", (163, 255, 0)),  # 58
    ("bed", (119, 0, 170)),  # 59
    ("dining table", (0, 182, 199)),  # 60
    ("toilet", (0, 165, 120)),  # 61
    ("tv", (183, 130, 88)),  # 62
    ("laptop", (95, 32, 0)),  # 63
    ("mouse", (130, 114, 135)),  # 64
    ("remote", (110, 129, 133)),  # 65
    ("keyboard", (166, 74, 118)),  # 66
    ("cell phone", (219, 142, 185)),  # 67
    ("microwave", (79, 210, 114)),  # 68
    ("oven", (178, 90, 62)),  # 69
    ("toaster", (65, 70, 15)),  # 70
    ("sink", (127, 167, 115)),  # 71
    ("refrigerator", (59, 105, 106)),  # 72
    ("book", (142, 108, 45)),  # 73
    ("clock", (196, 172, 0)),  # 74
    ("vase", (95, 54, 80)),  # 75
    ("scissors", (128, 76, 255)),  # 76
    ("teddy bear", (201, 57, 1)),  # 77
    ("hair drier", (246, 0, 122)),  # 78
    ("toothbrush", (191, 162, 208)),  # 79
    ("banner", (255, 255, 128)),  # 80
    ("blanket", (147, 211, 203)),  # 81
    ("bridge", (150, 100, 100)),  # 82
    ("cardboard", (168, 171, 172)),  # 83
    ("counter", (146, 112, 198)),  # 84
    ("curtain", (210, 170, 100)),  # 85
    ("door-stuff", (92, 136, 89)),  # 86
    ("floor-wood", (218, 88, 184)),  # 87
    ("flower", (241, 129, 0)),  # 88
    ("fruit", (217, 17, 255)),  # 89
    ("gravel", (124, 74, 181)),  # 90
    ("house", (70, 70, 70)),  # 91
    ("light", (255, 228, 255)),  # 92
    ("mirror-stuff", (154, 208, 0)),  # 93
    ("net", (193, 0, 92)),  # 94
    ("pillow", (76, 91, 113)),  # 95
    ("platform", (255, 180, 195)),  # 96
    ("playingfield", (106, 154, 176)),  # 97
    ("railroad", (230, 150, 140)),  # 98
    ("river", (60, 143, 255)),  # 99
    ("road", (128, 64, 128)),  # 100
    ("roof", (92, 82, 55)),  # 101
    ("sand", (254, 212, 124)),  # 102
    ("sea", (73, 77, 174)),  # 103
    ("shelf", (255, 160, 98)),  # 104
    ("snow", (255, 255, 255)),  # 105
    ("stairs", (104, 84, 109)),  # 106
    ("tent", (169, 164, 131)),  # 107
    ("towel", (225, 199, 255)),  # 108
    ("wall-brick", (137, 54, 74)),  # 109
    ("wall-stone", (135, 158, 223)),  # 110
    ("wall-tile", (7, 246, 231)),  # 111
    ("wall-wood", (107, 255, 200)),  # 112
    ("water-other", (58, 41, 149)),  # 113
    ("window-blind", (183, 121, 142)),  # 114
    ("window-other", (255, 73, 97)),  # 115
    ("tree-merged", (107, 142, 35)),  # 116
    ("fence-merged", (190, 153, 153)),  # 117
    ("ceiling-merged", (146, 139, 141)),  # 118
    ("sky-other-merged", (70, 130, 180)),  # 119
    ("cabinet-merged", (134, 199, 156)),  # 120
    ("table-merged", (209, 226, 140)),  # 121
    ("floor-other-merged", (96, 36, 108)),  # 122
    ("pavement-merged", (96, 96, 96)),  # 123
    ("mountain-merged", (64, 170, 64)),  # 124
    ("grass-merged", (152, 251, 152)),  # 125
    ("dirt-merged", (208, 229, 228)),  # 126
    ("paper-merged", (206, 186, 171)),  # 127
    ("food-other-merged", (152, 161, 64)),  # 128
    ("building-other-merged", (116, 112, 0)),  # 129
    ("rock-merged", (0, 114, 143)),  # 130
    ("wall-other-merged", (102, 102, 156)),  # 131
    ("rug-merged", (250, 141, 255)),  # 132
)
CLASSES: tuple[str, ...] = tuple(name for name, _ in COCO)
PALETTE: np.ndarray = np.array([rgb for _, rgb in COCO], np.uint8)  # (133, 3)
PALETTE.setflags(write=False)

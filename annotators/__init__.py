"""Condition-map annotators: one RGB image in, pixel-aligned ControlNet condition map out.

>>> from annotators import create, list_annotators
>>> edges = create("canny", low=50)(rgb)  # HxW uint8, white edges on black
"""

# Each family module registers itself on import; family modules import heavy
# libraries (torch, mediapipe) lazily, so this stays cheap.
from annotators import (  # noqa: F401
    animal_pose,
    canny,
    densepose,
    depth,
    face,
    hed,
    inpaint,
    lineart,
    lineart_anime,
    lines,
    normal,
    pose,
    sam,
    seg,
    shuffle,
    softedge,
    teed,
    tile,
)
from annotators.base import Annotation, Annotator, AnnotatorError, Param
from annotators.registry import create, get, list_annotators, register

__all__ = [
    "Annotation",
    "Annotator",
    "AnnotatorError",
    "Param",
    "create",
    "get",
    "list_annotators",
    "register",
]

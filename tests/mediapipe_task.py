"""A real ``pose_landmarker_full.task`` assembled from the models inside the mediapipe 0.10.21
wheel (the ``pose-bundled`` environment): the Tasks layout (``pose_detector.tflite`` +
``pose_landmarks_detector.tflite``, each with the image-input metadata the Tasks API reads
its normalisation from, in an uncompressed 4-byte-aligned zip). Same BlazePose models as the
published file's generation; lets the Tasks route run on real photos without a download."""

from __future__ import annotations

from pathlib import Path

#: Tasks file name inside the bundle <- (wheel file under mediapipe/modules, mean, std on 0..255)
POSE_PARTS = {
    "pose_detector.tflite": ("pose_detection/pose_detection.tflite", 127.5, 127.5),  # -1..1
    "pose_landmarks_detector.tflite": ("pose_landmark/pose_landmark_full.tflite", 0.0, 255.0),
}


def with_input_metadata(model: bytes, name: str, mean: float, std: float) -> bytes:
    """The TF Lite model with image-input metadata (its input normalisation)."""
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    writer.add_general_info(name, "from the mediapipe 0.10.21 wheel")
    writer.add_image_input(norm_mean=[mean], norm_std=[std])
    return bytes(writer.populate()[0])


def write_pose_task(folder: Path) -> Path:
    """Write ``folder/pose_landmarker_full.task`` (needs mediapipe 0.10.21's bundled models)."""
    import mediapipe
    from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils

    modules = Path(mediapipe.__file__).parent / "modules"
    parts = {
        inner: with_input_metadata((modules / rel).read_bytes(), inner, mean, std)
        for inner, (rel, mean, std) in POSE_PARTS.items()
    }
    path = Path(folder) / "pose_landmarker_full.task"
    model_asset_bundle_utils.create_model_asset_bundle(parts, str(path))
    return path

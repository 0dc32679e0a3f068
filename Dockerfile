# hintset on a Ray base image: the same image runs the head, the workers and `hintset build`.
#   CPU:  docker build -t hintset .
#   CUDA: docker build -t hintset:gpu --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu .
# The Ray version must match the cluster's; the extras below must match pyproject.toml
# (tests/test_deploy.py checks it).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311
FROM ${RAY_IMAGE}

USER root
# libgl1/libglib2.0-0: opencv-contrib-python (required by mediapipe) is the non-headless build.
# The default stack (numpy 2, mediapipe's Tasks API with .task files as weights); the
# bundled-model extra `pose-bundled` (numpy 1.x) is not for this image.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
USER ray
WORKDIR /home/ray/hintset

COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users annotators ./annotators
COPY --chown=ray:users pipeline ./pipeline
COPY --chown=ray:users training ./training
COPY --chown=ray:users evaluation ./evaluation
RUN pip install --no-cache-dir ".[pose,models,train,cloud,dwpose]" && pip check

# Weights (the .task files of pose/face too) are not baked in: mount them and point hintset
# at them (or use an HF cache volume).
ENV HINTSET_WEIGHTS_DIR=/weights
ENTRYPOINT []
CMD ["hintset", "--help"]

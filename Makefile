# Developer shortcuts; the test command is `bash scripts/test.sh`.
.PHONY: image-check

# Build the Docker image with buildah and serve it with no network (root, slow). IMAGE_CHECK_MODEL=DIR for real weights.
image-check:
	bash scripts/image-check.sh

#!/usr/bin/env bash
# Build the images (and push them with --push): the two Python environments first, then one image
# per process on top of them. Run from anywhere; the build context is the repository root.
#
#   deploy/docker/build.sh [--push]
#   HEZE_REGISTRY=registry.example.gov.cn/heze HEZE_TAG=2027-01-15 deploy/docker/build.sh --push
#
# HEZE_REGISTRY  image name prefix (default: heze); HEZE_TAG  tag (default: the commit, short).
# Extra `docker build` arguments (a mirror, say) go in HEZE_BUILD_ARGS, e.g.
#   HEZE_BUILD_ARGS="--build-arg PIP_INDEX_URL=https://mirror.example/simple"
# Needs Docker with BuildKit (Docker 23 or later; each Dockerfile has its own .dockerignore).
set -euo pipefail
cd "$(dirname "$0")/../.."

registry=${HEZE_REGISTRY:-heze}
tag=${HEZE_TAG:-$(git rev-parse --short HEAD)}
push=false
[ "${1:-}" = "--push" ] && push=true
# shellcheck disable=SC2206
extra=(${HEZE_BUILD_ARGS:-})

# What the images copy from var/: the trained model and the production speech and embedding models.
for need in var/models/heze.tar.gz var/models/vosk-model-small-cn-0.22 var/models/bge-small-zh-v1.5; do
  if [ ! -e "$need" ]; then
    echo "missing $need: run 'make train' (the Rasa model) and 'make models' (speech, embeddings) first" >&2
    exit 1
  fi
done

build() {  # build IMAGE DOCKERFILE [docker build arguments]
  local image=$1 file=$2; shift 2
  echo "== $image"
  DOCKER_BUILDKIT=1 docker build -f "$file" -t "$image" "${extra[@]}" "$@" .
  if $push; then docker push "$image"; fi
}

build "$registry/base-rasa:$tag" deploy/docker/base.Dockerfile \
  --build-arg PYTHON_VERSION=3.10 --build-arg LOCK=requirements/rasa.lock
build "$registry/base-app:$tag" deploy/docker/base.Dockerfile \
  --build-arg PYTHON_VERSION=3.11 --build-arg LOCK=requirements/app.lock
build "$registry/rasa:$tag" deploy/docker/rasa.Dockerfile --build-arg "BASE_IMAGE=$registry/base-rasa:$tag"
build "$registry/wechat-front:$tag" deploy/docker/wechat-front.Dockerfile --build-arg "BASE_IMAGE=$registry/base-rasa:$tag"
for name in action-server services-api voice-gateway console; do
  build "$registry/$name:$tag" "deploy/docker/$name.Dockerfile" --build-arg "BASE_IMAGE=$registry/base-app:$tag"
done
echo "built $registry/{rasa,wechat-front,action-server,services-api,voice-gateway,console}:$tag"

#!/usr/bin/env bash
# `make images`: build the arctic-serve images with buildah (no Docker daemon, no registry needed),
# check each one by running it, and write each as an image archive under .images/ that
# `kind load image-archive`, `skopeo copy` and `buildah push` take.
#
#   tools/images/build.sh [IMAGE...]    IMAGE: operator, runtime-cpu, runtime (default: all three)
#   tools/images/build.sh buildah ARGS  buildah with the storage settings below (e.g. `... buildah images`)
#
# Every choice about how buildah runs here is in this file:
#   STORAGE_DRIVER=overlay   the kernel's overlayfs (works as root on ext4/xfs); `vfs` works anywhere
#                            but copies the whole root filesystem for every layer (~5x the disk)
#   BUILDAH_ISOLATION=chroot no user namespaces or OCI runtime needed; RUN steps use the host network
#   --format docker          Docker's image format, in which SHELL (pipefail) is honoured (buildah's
#                            OCI format ignores it); --layers: unchanged steps come from the cache
#   buildah's default storage (/var/lib/containers/storage as root), so `buildah images` lists them
# Other settings (environment):
#   TAG             image tag (default: the chart's appVersion)
#   REPO            name prefix (default ghcr.io/arctic-serve, the chart's default repositories)
#   PYTHON_IMAGE    base of operator and runtime-cpu (default: a local Debian 12 + Python 3.11 base,
#                   localhost/arctic-serve/python:3.11-bookworm, made by mmdebstrap from Debian's mirror)
#   VLLM_IMAGE      base of the GPU runtime (default docker.io/vllm/vllm-openai:v0.26.0): used if
#                   buildah's store has it, else pulled; when it cannot be had the GPU image is skipped
#                   (and reported) in the default set, an error when asked for by name
#   TORCH_INDEX_URL runtime-cpu's torch index (default: PyTorch's CPU index when it answers, else ""
#                   = PyPI's torch, as `make setup` installs)
#   ARCHIVE_FORMAT  docker (default: docker-archive, `docker save`'s format, which carries the image's
#                   name) or oci (oci-archive: containerd, which `kind load image-archive` feeds,
#                   imports those without a name unless given one)
#   CA_BUNDLE       a CA bundle bind-mounted read-only over the build containers'
#                   /etc/ssl/certs/ca-certificates.crt during RUN steps (never part of an image), for
#                   hosts whose HTTPS goes through a TLS-inspecting proxy. Default: the host's bundle
#                   when /usr/local/share/ca-certificates holds a locally added CA; CA_BUNDLE= for none.
#                   (Debian's pip, which the local base's venvs get, reads that system bundle.)
#   OUT             where the archives go (default .images, git-ignored); ARCHIVE=0 writes none
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

STORAGE_DRIVER=${STORAGE_DRIVER:-overlay}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
OUT=${OUT:-.images}
CACHE=${CACHE:-$ROOT/.cache/images}
TAG=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/arctic-serve/Chart.yaml)}
REPO=${REPO:-ghcr.io/arctic-serve}
LOCAL_PYTHON=localhost/arctic-serve/python:3.11-bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
ARCHIVE_FORMAT=${ARCHIVE_FORMAT:-docker}
ARCHIVE=${ARCHIVE:-1}

bah() { buildah --storage-driver "$STORAGE_DRIVER" "$@"; }
log() { printf 'images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
now() { date +%s; }

if [[ ${1:-} == buildah ]]; then
  shift
  exec buildah --storage-driver "$STORAGE_DRIVER" "$@"
fi

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=(operator runtime-cpu runtime)
for name in "${wanted[@]}"; do
  case $name in operator | runtime-cpu | runtime) ;; *) die "unknown image '$name': allowed: operator, runtime-cpu, runtime" ;; esac
done
case $ARCHIVE_FORMAT in docker | oci) ;; *) die "ARCHIVE_FORMAT=$ARCHIVE_FORMAT: allowed: docker, oci" ;; esac
command -v buildah >/dev/null || die "buildah not found: apt-get install buildah (Debian/Ubuntu) or dnf install buildah"
[[ $(id -u) == 0 ]] || log "not root: buildah needs subuid/subgid ranges for rootless builds (man buildah); as root it needs none"

if [[ -z ${CA_BUNDLE+set} ]]; then
  CA_BUNDLE=""
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt; fi
fi
CA_MOUNT=()
if [[ -n $CA_BUNDLE ]]; then
  [[ -r $CA_BUNDLE ]] || die "CA_BUNDLE=$CA_BUNDLE: not a readable file"
  CA_MOUNT=(-v "$(realpath "$CA_BUNDLE"):/etc/ssl/certs/ca-certificates.crt:ro")
  log "build containers trust $CA_BUNDLE (mounted during RUN steps only)"
fi

has_image() { bah inspect --type image "$1" >/dev/null 2>&1; }

# run_in IMAGE COMMAND: run a shell command in a throw-away container of IMAGE, as the image's user
run_in() {
  local c rc=0
  c=$(bah from "$1")
  bah run "$c" -- sh -c "$2" || rc=$?
  bah rm "$c" >/dev/null
  return $rc
}

# --- the local Python base: Debian 12 (bookworm) from Debian's mirror, with what the Dockerfiles use
# of python:3.11-slim-bookworm: `python` and `python3` (3.11), `python -m venv` with pip (ensurepip),
# Python's headers (torch's inductor compiles against them), CA certificates, apt with bookworm,
# bookworm-updates and bookworm-security, groupadd/useradd; LANG=C.UTF-8. Python lives in /usr/bin
# (the official image's is in /usr/local/bin; the Dockerfiles only call it through PATH).
local_python_base() {
  if has_image "$LOCAL_PYTHON" && [[ -z ${REBUILD_BASE:-} ]]; then
    log "base: $LOCAL_PYTHON exists (REBUILD_BASE=1 rebuilds it)"
    return
  fi
  command -v mmdebstrap >/dev/null || die "mmdebstrap not found: apt-get install mmdebstrap (it builds the local Python base from Debian's mirror)"
  mkdir -p "$CACHE"
  local t0 rootfs=$CACHE/python-3.11-bookworm.tar c
  t0=$(now)
  log "base: mmdebstrap bookworm + python3 -> $rootfs"
  mmdebstrap --variant=minbase --quiet \
    --include=python3,python3-venv,python-is-python3,python3.11-dev,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$rootfs" \
    "deb $DEBIAN_MIRROR bookworm main" \
    "deb $DEBIAN_MIRROR bookworm-updates main" \
    "deb $DEBIAN_SECURITY bookworm-security main"
  c=$(bah from scratch)
  bah add --quiet "$c" "$rootfs" / # a local tar archive is unpacked
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label org.opencontainers.image.title=arctic-serve-python-base \
    --label org.opencontainers.image.description="Debian 12 + Python 3.11 (mmdebstrap), stand-in for python:3.11-slim-bookworm" \
    "$c"
  bah commit --quiet --rm "$c" "$LOCAL_PYTHON" >/dev/null
  run_in "$LOCAL_PYTHON" 'python -c "import sys, ensurepip, sysconfig, os; assert sys.version_info[:2] == (3, 11); assert os.path.exists(sysconfig.get_paths()[\"include\"] + \"/Python.h\")"' \
    || die "base: $LOCAL_PYTHON has no Python 3.11 with ensurepip and headers"
  log "base: $LOCAL_PYTHON built in $(($(now) - t0)) s"
}

python_image() {
  if [[ -z ${PYTHON_IMAGE:-} ]]; then
    local_python_base
    PYTHON_IMAGE=$LOCAL_PYTHON
  fi
}

torch_index() {
  if [[ -z ${TORCH_INDEX_URL+set} ]]; then
    if curl -fsS --max-time 15 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
      TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
    else
      log "runtime-cpu: download.pytorch.org does not answer: PyPI's torch (TORCH_INDEX_URL=\"\", +2.7 GB of nvidia-* wheels)"
      TORCH_INDEX_URL=""
    fi
  fi
}

# build NAME ARGS...: buildah bud of images/NAME/Dockerfile from the repository root, tagged $REPO/NAME:$TAG
build() {
  local name=$1
  shift
  local t0
  t0=$(now)
  log "$name: building $REPO/$name:$TAG"
  bah bud --layers --format docker --isolation "$BUILDAH_ISOLATION" "${CA_MOUNT[@]}" --ignorefile "images/$name/Dockerfile.dockerignore" \
    -f "images/$name/Dockerfile" -t "$REPO/$name:$TAG" "$@" .
  TIMES[$name]=$(($(now) - t0))
}

# check NAME COMMAND: run COMMAND in a container of the built image, as the image's user
check() {
  run_in "$REPO/$1:$TAG" "$2" || die "$1: the check failed: $2"
  log "$1: checked: $2"
}

archive() {
  local name=$1 file
  [[ $ARCHIVE == 1 ]] || return 0
  mkdir -p "$OUT"
  file=$OUT/$name-$TAG.tar
  [[ $ARCHIVE_FORMAT == oci ]] && file=$OUT/$name-$TAG.oci.tar
  rm -f "$file"
  local t0
  t0=$(now)
  bah push --quiet "$REPO/$name:$TAG" "$ARCHIVE_FORMAT-archive:$file:$REPO/$name:$TAG"
  log "$name: wrote $file ($(du -h "$file" | cut -f1), $(($(now) - t0)) s)"
}


declare -A TIMES=()
SUMMARY=()
for name in "${wanted[@]}"; do
  case $name in
    operator)
      python_image
      build operator --build-arg PYTHON_IMAGE="$PYTHON_IMAGE"
      check operator 'test "$(id -u):$(id -g)" = 10001:10001 && arctic-serve --version && arctic-serve operator --help >/dev/null && python -c "import kopf, arctic_operator" && ! python -c "import torch" 2>/dev/null'
      ;;
    runtime-cpu)
      python_image
      torch_index
      build runtime-cpu --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL"
      check runtime-cpu 'test "$(id -u)" = 10001 && python -c "import vllm, vllm._C, arctic_runtime.plugin; assert vllm.__version__ == \"0.26.0\"; print(\"vllm\", vllm.__version__)" && test -r /models/smollm2-135m-instruct/model.safetensors'
      ;;
    runtime)
      vllm_image=${VLLM_IMAGE:-docker.io/vllm/vllm-openai:v0.26.0}
      if ! has_image "$vllm_image" && ! err=$(bah pull --quiet "$vllm_image" 2>&1); then
        msg="runtime: NOT BUILT: its base $vllm_image cannot be pulled (${err##*$'\n'}). Set VLLM_IMAGE to a pullable vLLM 0.26 image (a mirror of it)"
        log "$msg"
        SUMMARY+=("$msg")
        [[ $# -eq 0 ]] && continue # part of the default set: the other images still count
        exit 1
      fi
      build runtime --build-arg VLLM_IMAGE="$vllm_image"
      check runtime 'test "$(id -u)" = 10001 && python3 -c "import vllm, arctic_runtime.plugin; print(\"vllm\", vllm.__version__)"'
      ;;
  esac
  size=$(bah images --format '{{.Size}}' "$REPO/$name:$TAG" | head -1)
  archive "$name"
  SUMMARY+=("$name: $REPO/$name:$TAG built in ${TIMES[$name]} s, $size")
done

log "done:"
printf '  %s\n' "${SUMMARY[@]}" >&2

#!/usr/bin/env bash
# Stage files larger than one device call can carry onto a warm GPU host, in chunks.
#
# A device call sends the working tree (~30 MB tracked) plus its carry, at most 64 MiB in all, so the
# packed SmolLM2 weights (~97 MB) go over in chunks, one call each, on the same warm host:
#   here:  bash bench/gpu/stage.sh pack .gpu-swiftkv/weights     # writes .gpu-stage/00, 01, ...
#   host:  bash bench/gpu/stage.sh put 00                        # carry .gpu-stage/00; then 01, ...
# When the last chunk arrives, `put` unpacks them all under /var/tmp/stage/tree (same relative paths)
# and prints "STAGE READY". The host keeps /var/tmp between calls only while it stays warm (~30 s idle).
set -euo pipefail
cd "$(dirname "$0")/../.."
chunk=${CHUNK:-30m}
host_dir=${STAGE_DIR:-/var/tmp/stage}
case "${1:-}" in
  pack)
    shift
    [ $# -gt 0 ] || { echo "stage.sh pack: name the paths to stage" >&2; exit 2; }
    rm -rf .gpu-stage && mkdir -p .gpu-stage/split
    tar cf - "$@" | split -b "$chunk" -d -a 2 - .gpu-stage/split/
    n=$(ls .gpu-stage/split | wc -l)
    for f in .gpu-stage/split/*; do
      id=$(basename "$f")
      mkdir -p ".gpu-stage/$id"
      mv "$f" ".gpu-stage/$id/chunk"
      echo "$n" > ".gpu-stage/$id/count"
    done
    rmdir .gpu-stage/split
    ls -la .gpu-stage/*/chunk
    ;;
  put)
    id=${2:?usage: stage.sh put NN}
    mkdir -p "$host_dir/chunks"
    cp ".gpu-stage/$id/chunk" "$host_dir/chunks/$id"
    n=$(cat ".gpu-stage/$id/count")
    have=$(ls "$host_dir/chunks" | wc -l)
    echo "stage: chunk $id in place ($have of $n)"
    if [ "$have" -eq "$n" ]; then
      rm -rf "$host_dir/tree" && mkdir -p "$host_dir/tree"
      cat "$host_dir"/chunks/* | tar xf - -C "$host_dir/tree"
      find "$host_dir/tree" -type f -exec ls -la {} +
      echo "STAGE READY"
    fi
    ;;
  *)
    echo "usage: bash bench/gpu/stage.sh pack PATH... | put NN" >&2; exit 2 ;;
esac

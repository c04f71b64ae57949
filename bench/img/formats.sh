#!/bin/sh
# Foreign formats: vireo-img vs qemu-img converting vmdk/vhdx/luks sources into qcow2, one run each.
#   bench/img/formats.sh [BUILD_DIR]     SIZE=512M (source size)   WORK=/path/to/scratch
# ratio = qemu-img time / vireo-img time (> 1: vireo-img is faster). Sources are made by qemu-img from a raw
# file with random data in 3 of every 4 MiB (a used disk), so both tools read the same bytes.
set -eu
BUILD=${1:-$(dirname "$0")/../../build}
VIMG=$(cd "$BUILD" && pwd)/vireo-img
QIMG=${QIMG:-$(command -v qemu-img)}
SIZE=${SIZE:-512M}
[ -x "$VIMG" ] || { echo "no $VIMG (build it first)" >&2; exit 1; }
WORK=${WORK:-$(mktemp -d /tmp/vireo-fmt-bench.XXXXXX)}
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
now() { date +%s.%N; }
time_cmd() { s=$(now); "$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; exit 1; }; e=$(now); awk "BEGIN{print $e - $s}"; }
row() { printf '%-40s %10.3f %10.3f %8.2fx\n' "$1" "$2" "$3" "$(awk "BEGIN{print $2 / $3}")"; }

echo "preparing $SIZE sources in $WORK ..."
truncate -s "$SIZE" src.raw
mb=$(( $(stat -c %s src.raw) / 1048576 ))
i=0
while [ $i -lt "$mb" ]; do
  [ $((i % 4)) -ne 3 ] && dd if=/dev/urandom of=src.raw bs=1M count=1 seek=$i conv=notrunc status=none
  i=$((i + 1))
done
S="--object secret,id=sec0,data=abc123"
"$QIMG" convert -O vmdk src.raw src.vmdk
"$QIMG" convert -O vmdk -o subformat=streamOptimized src.raw so.vmdk
"$QIMG" convert -O vhdx src.raw src.vhdx
"$QIMG" convert $S -O luks -o key-secret=sec0,iter-time=10 src.raw src.luks
cat src.raw src.vmdk so.vmdk src.vhdx src.luks > /dev/null

printf '%-40s %10s %10s %9s\n' "operation" "qemu-img s" "vireo-img s" "ratio"
conv() {
  name=$1; shift
  rm -f out.img; q=$(time_cmd "$QIMG" convert "$@" out.img)
  rm -f out.img; v=$(time_cmd "$VIMG" convert "$@" out.img)
  rm -f out.img
  row "$name" "$q" "$v"
}
conv "convert vmdk->qcow2 ($SIZE monolithicSparse)" -O qcow2 src.vmdk
conv "convert vmdk->qcow2 ($SIZE streamOptimized)" -O qcow2 so.vmdk
conv "convert vhdx->qcow2 ($SIZE)" -O qcow2 src.vhdx
conv "convert raw->vmdk ($SIZE)" -O vmdk src.raw
conv "convert raw->vhdx ($SIZE)" -O vhdx src.raw
conv "convert raw->luks ($SIZE, iter-time 10)" $S -O luks -o key-secret=sec0,iter-time=10 src.raw

#!/bin/sh
# vireo-img vs qemu-img, side by side, one run each (ratios only; nothing asserts timings).
#   bench/img/run.sh [BUILD_DIR]        (default: build/)   WORK=/path/to/scratch (default: a mktemp dir)
# Rows: convert 1 GiB raw->qcow2 and qcow2->raw for a random-data and a sparse source, convert -c (zlib and
# zstd) of a 256 MiB half-compressible source, and create/info latency (mean of 20 runs).
# ratio = qemu-img time / vireo-img time (> 1: vireo-img is faster).
set -eu
BUILD=${1:-$(dirname "$0")/../../build}
VIMG=$(cd "$BUILD" && pwd)/vireo-img
QIMG=${QIMG:-$(command -v qemu-img)}
[ -x "$VIMG" ] || { echo "no $VIMG (build it first)" >&2; exit 1; }
[ -n "$QIMG" ] || { echo "qemu-img not installed" >&2; exit 1; }
WORK=${WORK:-$(mktemp -d /tmp/vireo-img-bench.XXXXXX)}
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

now() { date +%s.%N; }
# time_cmd CMD...: seconds one run of CMD takes
time_cmd() { s=$(now); "$@" >/dev/null 2>&1; e=$(now); awk "BEGIN{print $e - $s}"; }
row() {  # row NAME QEMU_SECONDS VIREO_SECONDS
  printf '%-34s %10.3f %10.3f %8.2fx\n' "$1" "$2" "$3" "$(awk "BEGIN{print $2 / $3}")"
}

echo "preparing sources in $WORK ..."
head -c 1G /dev/urandom > rand.raw
# sparse: 1 GiB with 64 random 1 MiB extents (6% data)
truncate -s 1G sparse.raw
i=0
while [ $i -lt 64 ]; do
  dd if=/dev/urandom of=sparse.raw bs=1M count=1 seek=$((i * 16 + 3)) conv=notrunc status=none
  i=$((i + 1))
done
"$QIMG" convert -O qcow2 rand.raw rand.qcow2
"$QIMG" convert -O qcow2 sparse.raw sparse.qcow2
# half-compressible 256 MiB: text-like blocks interleaved with random ones
python3 - <<'PY'
import random
r = random.Random(1)
with open("comp.raw", "wb") as f:
    for i in range(256):
        if i % 2:
            f.write(r.randbytes(1 << 20))
        else:
            words = [b"vireo", b"qcow2", b"cluster", b"refcount", b"snapshot", b"backing", b"zlib", b"zstd"]
            f.write((b" ".join(r.choice(words) for _ in range(200000)))[: 1 << 20].ljust(1 << 20, b"."))
PY
cat rand.raw sparse.raw comp.raw rand.qcow2 sparse.qcow2 > /dev/null   # warm the page cache

printf '%-34s %10s %10s %9s\n' "operation" "qemu-img s" "vireo-img s" "ratio"
conv() {  # conv NAME ARGS... : both tools, target out.*, fresh each time
  name=$1; shift
  rm -f out.img; q=$(time_cmd "$QIMG" convert "$@" out.img)
  rm -f out.img; v=$(time_cmd "$VIMG" convert "$@" out.img)
  rm -f out.img
  row "$name" "$q" "$v"
}
conv "convert raw->qcow2 (random 1G)" -O qcow2 rand.raw
conv "convert raw->qcow2 (sparse 1G)" -O qcow2 sparse.raw
conv "convert qcow2->raw (random 1G)" -O raw rand.qcow2
conv "convert qcow2->raw (sparse 1G)" -O raw sparse.qcow2
conv "convert -c zlib (256M, half text)" -c -O qcow2 comp.raw
conv "convert -c zstd (256M, half text)" -c -O qcow2 -o compression_type=zstd comp.raw

lat() {  # lat NAME ARGS...: mean seconds of 20 runs per tool
  name=$1; shift
  for tool in "$QIMG" "$VIMG"; do
    s=$(now); n=0
    while [ $n -lt 20 ]; do rm -f lat.qcow2; "$tool" "$@" >/dev/null 2>&1 || true; n=$((n + 1)); done
    e=$(now)
    eval "t_$(basename "$tool" | tr -c 'a-z\n' '_')=\$(awk \"BEGIN{print (\$e - \$s) / 20}\")"
  done
  row "$name" "$t_qemu_img" "$t_vireo_img"
}
lat "create qcow2 10G (latency)" create -q -f qcow2 lat.qcow2 10G
"$QIMG" create -q -f qcow2 info.qcow2 10G
lat "info qcow2 (latency)" info info.qcow2
lat "info --output=json (latency)" info --output=json rand.qcow2

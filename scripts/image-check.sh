#!/usr/bin/env bash
# Proves the image builds and then serves with no network at all, on a machine with no Docker engine:
# builds the Dockerfile with buildah on a debootstrapped Debian bookworm base (Python 3.11), weights taken
# from the build context, then runs the image's own CMD as uid 1000 inside the mounted image under
# `unshare --net` and checks its HEALTHCHECK, /healthz and /api/infer on loopback.
#   bash scripts/image-check.sh                          a tiny random model (pipeline.synthetic)
#   IMAGE_CHECK_MODEL=DIR bash scripts/image-check.sh    a real model folder, hardlinked into weights/
#   IMAGE_CHECK_REV=HEAD bash scripts/image-check.sh     build a commit (git archive) instead of the working tree
#   IMAGE_CHECK_PLATFORM=linux/arm64 bash scripts/image-check.sh   build and run the arm64 image under qemu
# Needs root; installs buildah, podman, debootstrap and iproute2 with apt-get when missing; the tiny model is
# made with .venv's python (from scripts/test.sh; PYTHON=... otherwise). Slow: the first run debootstraps the
# base and installs torch (later runs reuse buildah's layer cache); work files go to $WORK, never into the repo.
# Env: WORK (/var/tmp/qwen-image-check), BASE_IMAGE (localhost/debpy:bookworm, made when missing), IMAGE,
#      TORCH_WHEELS (host folder with the torch +cpu wheel, default /opt/wheels when it exists; empty: PyTorch's
#      CPU index), PIP_CERT (host CA bundle for pip in the build), MIRROR (Debian mirror; default: apt's).
# IMAGE_CHECK_PLATFORM (linux/amd64 or linux/arm64; default: this machine's). Another platform than this
# machine's is built (buildah --platform) and run under qemu user-mode emulation, which this script sets up
# when missing (qemu-user-static, binfmt-support, the binfmt_misc mount); its base is debootstrapped for that
# architecture (first stage here, second stage under qemu) and cached as BASE_IMAGE; WORK, BASE_IMAGE and
# IMAGE get the architecture as a suffix. Its torch: when TORCH_WHEELS is unset, `pip download` (PYTHON's
# pip, cached in $WORK/wheels) fetches PyPI's torch==X for that platform and what it requires; PyPI's aarch64
# torch is the CUDA build, so the build gets ALLOW_CUDA_TORCH=1 (for this check only; the app runs it on the
# CPU). TORCH_WHEELS=DIR (a folder with the +cpu wheel for that platform) or TORCH_WHEELS= (empty: PyTorch's
# CPU index) builds it exactly as users' builds do. Emulated arm64 gets an aarch64 /proc/cpuinfo (see step 3).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "== $*" >&2; }

host_arch=$(dpkg --print-architecture)
platform=${IMAGE_CHECK_PLATFORM:-linux/$host_arch}
arch=${platform#linux/}
case "$arch" in
  amd64) qemu_arch=x86_64 ;;
  arm64) qemu_arch=aarch64 ;;
  *) echo "IMAGE_CHECK_PLATFORM=$platform: only linux/amd64 and linux/arm64 are supported" >&2; exit 1 ;;
esac
foreign=; [ "$arch" = "$host_arch" ] || foreign=1
if [ -z "$foreign" ]; then
  WORK=${WORK:-/var/tmp/qwen-image-check}
  BASE_IMAGE=${BASE_IMAGE:-localhost/debpy:bookworm}
  IMAGE=${IMAGE:-localhost/qwen-all-in-one:check}
  TORCH_WHEELS=${TORCH_WHEELS-$( [ -d /opt/wheels ] && echo /opt/wheels )}
else
  WORK=${WORK:-/var/tmp/qwen-image-check-$arch}
  BASE_IMAGE=${BASE_IMAGE:-localhost/debpy:bookworm-$arch}
  IMAGE=${IMAGE:-localhost/qwen-all-in-one:check-$arch}
  pypi_torch=; [ -n "${TORCH_WHEELS+set}" ] || { pypi_torch=1; TORCH_WHEELS=$WORK/wheels; }
fi
PIP_CERT=${PIP_CERT:-}

# 0. Emulation for another platform: the kernel runs its binaries through qemu (binfmt_misc). The F flag
# (Debian's qemu-user-static sets it) opens the interpreter when registered, so it works inside chroots.
if [ -n "$foreign" ]; then
  binfmt=/proc/sys/fs/binfmt_misc/qemu-$qemu_arch
  setup=("apt-get install -y qemu-user-static binfmt-support"
         "mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"
         "update-binfmts --enable qemu-$qemu_arch")
  if ! grep -qx enabled "$binfmt" 2>/dev/null; then
    if [ "$(id -u)" != 0 ]; then
      printf '%s\n' "$platform on $host_arch needs qemu user-mode emulation, not set up here. As root:" "${setup[@]/#/  }" >&2
      exit 1
    fi
    log "setting up qemu emulation for $platform"
    if ! command -v update-binfmts >/dev/null || [ ! -e "/usr/libexec/qemu-binfmt/$qemu_arch-binfmt-P" ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support >/dev/null
    fi
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
      || { log "the kernel refused to mount binfmt_misc (above): no emulation, no $platform check"; exit 1; }
    update-binfmts --enable "qemu-$qemu_arch" \
      || { log "update-binfmts --enable qemu-$qemu_arch failed (above): no emulation, no $platform check"; exit 1; }
    grep -qx enabled "$binfmt" || { log "$binfmt is not enabled after set-up"; exit 1; }
  fi
  grep -q '^flags:.*F' "$binfmt" \
    || { log "$binfmt has no F (fix-binary) flag, so chroots cannot find qemu: $(grep '^flags' "$binfmt")"; exit 1; }
  log "emulating $platform with $(sed -n 's/^interpreter //p' "$binfmt")"
fi

[ "$(id -u)" = 0 ] || { echo "image-check needs root (buildah, chroot, unshare)" >&2; exit 1; }
missing=()
for tool in buildah:buildah podman:podman debootstrap:debootstrap ip:iproute2 unshare:util-linux; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p "$WORK"
# This machine refuses the default container ulimits.
printf '[containers]\ndefault_ulimits = []\n' > "$WORK/containers.conf"
export CONTAINERS_CONF="$WORK/containers.conf"

# 1. The base: Debian bookworm minbase with python3 (3.11) and venv, standing in for python:3.11-slim.
if ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  mirror=${MIRROR:-$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -v security | head -n1 | tr -d ' ' || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  log "debootstrapping $BASE_IMAGE from $mirror"
  rm -rf "$WORK/rootfs"
  if [ -z "$foreign" ]; then
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" "$mirror" \
      > "$WORK/debootstrap.log"
    tar -C "$WORK/rootfs" -cf "$WORK/base.tar" .
    podman import "$WORK/base.tar" "$BASE_IMAGE" >/dev/null
  else
    # Unpack here, configure inside the new root under qemu.
    debootstrap --arch="$arch" --foreign --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$WORK/rootfs" "$mirror" > "$WORK/debootstrap.log"
    chroot "$WORK/rootfs" /debootstrap/debootstrap --second-stage >> "$WORK/debootstrap.log"
    log "base: $(chroot "$WORK/rootfs" /usr/bin/python3 -c 'import platform; print(platform.machine(), "Python", platform.python_version())')"
    tar -C "$WORK/rootfs" -cf "$WORK/base.tar" .
    podman import --arch "$arch" "$WORK/base.tar" "$BASE_IMAGE" >/dev/null
  fi
  rm -rf "$WORK/rootfs" "$WORK/base.tar"
fi

# 2. The build context: the working tree, or a commit exported with git archive; weights in it: the given
# folder (hardlinked), else a tiny random model.
ctx=.
if [ -n "${IMAGE_CHECK_REV:-}" ]; then
  ctx=$WORK/context
  rm -rf "$ctx" && mkdir -p "$ctx"
  git archive "$IMAGE_CHECK_REV" | tar -x -C "$ctx"
  log "build context: $IMAGE_CHECK_REV ($(git rev-parse --short "$IMAGE_CHECK_REV")) exported to $ctx"
fi
if [ -n "${IMAGE_CHECK_MODEL:-}" ]; then
  model_name=image-check-$(basename "$IMAGE_CHECK_MODEL")
  rm -rf "$ctx/weights/$model_name"
  cp -al "$IMAGE_CHECK_MODEL" "$ctx/weights/$model_name" 2>/dev/null || cp -a "$IMAGE_CHECK_MODEL" "$ctx/weights/$model_name"
else
  model_name=image-check-tiny
  rm -rf "$ctx/weights/$model_name"
  "${PYTHON:-.venv/bin/python}" -m pipeline.synthetic "$ctx/weights/$model_name" --shape tiny >/dev/null 2>&1
fi
trap 'rm -rf "$ctx/weights/$model_name"' EXIT

# 3. Build: the same Dockerfile as `docker build`, only the base, torch source and CA bundle differ.
# Docker format, not OCI: OCI images have no HEALTHCHECK.
build=(buildah bud --isolation chroot --format docker --layers --force-rm -f "$ctx/Dockerfile" -t "$IMAGE"
       --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg MODEL_NAME="$model_name")
if [ -n "$foreign" ]; then build+=(--platform "$platform"); fi
if [ -n "${pypi_torch:-}" ]; then
  # PyPI's torch==X for the platform's Python 3.11 (bookworm's), with what it requires; manylinux up to glibc 2.36.
  torch_pin=$(grep -E '^torch==' requirements.txt)
  tags=(); for v in $(seq 36 -1 17); do tags+=(--platform "manylinux_2_${v}_$qemu_arch"); done
  log "downloading PyPI's $torch_pin for $platform into $TORCH_WHEELS (ALLOW_CUDA_TORCH=1: the check alone)"
  mkdir -p "$TORCH_WHEELS"
  "${PYTHON:-.venv/bin/python}" -m pip download -q --dest "$TORCH_WHEELS" --only-binary=:all: "${tags[@]}" \
    --platform "manylinux2014_$qemu_arch" --python-version 3.11 --implementation cp "$torch_pin" \
    > "$WORK/wheels.log" 2>&1 || { tail -n 20 "$WORK/wheels.log" >&2; log "pip download failed: $WORK/wheels.log"; exit 1; }
  log "torch wheels: $(du -sh "$TORCH_WHEELS" | cut -f1) in $(ls "$TORCH_WHEELS" | wc -l) files"
  build+=(--build-arg ALLOW_CUDA_TORCH=1)
fi
if [ -n "$TORCH_WHEELS" ]; then build+=(-v "$TORCH_WHEELS:/host-wheels:ro" --build-arg TORCH_FIND_LINKS=/host-wheels); fi
if [ -n "$PIP_CERT" ]; then build+=(-v "$PIP_CERT:/host-ca.crt:ro" --build-arg PIP_CERT=/host-ca.crt); fi
# Debian 12's qemu (7.2) passes the host's x86 /proc/cpuinfo through to arm64 programs, and `import torch` then
# dies with SIGSEGV in PyTorch's cpuinfo library (seen here, in the build's torch check); QEMU 8.2 and later
# answer with an aarch64 one. This stands in for that answer: a Cortex-A72 (Raspberry Pi 4) line per host CPU,
# bind-mounted over /proc/cpuinfo in a private mount namespace for the build, and in the image run below.
cpuinfo=()
if [ -n "$foreign" ] && [ "$arch" = arm64 ]; then
  for ((i = 0; i < $(nproc --all); i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n' "$i"
    printf 'CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
  done > "$WORK/cpuinfo"
  cpuinfo=("$WORK/cpuinfo")
  build=(unshare --mount --propagation private -- sh -c 'mount --bind "$0" /proc/cpuinfo && exec "$@"' "$WORK/cpuinfo"
         "${build[@]}")
  log "an aarch64 /proc/cpuinfo ($WORK/cpuinfo) stands in for the host's under emulation"
fi
log "building $IMAGE with weights/$model_name"
start=$(date +%s)
"${build[@]}" "$ctx" > "$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; log "build failed: $WORK/build.log"; exit 1; }
log "built in $(( $(date +%s) - start )) s (log: $WORK/build.log)"
if [ -n "$foreign" ]; then log "image platform: $(podman image inspect --format '{{.Os}}/{{.Architecture}}' "$IMAGE")"; fi
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "image size: $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.2f GiB", b / 2^30 }'))"

# 4. Run the image's CMD offline: mount its filesystem, chroot as uid 1000 in a network namespace with only lo.
buildah inspect --type image "$IMAGE" > "$WORK/image.json"
ctr=$(buildah from --pull=false ${foreign:+--platform "$platform"} "$IMAGE")
trap 'buildah umount "$ctr" >/dev/null 2>&1; buildah rm "$ctr" >/dev/null 2>&1; rm -rf "$ctx/weights/$model_name"' EXIT
mnt=$(buildah mount "$ctr")
if [ -n "$foreign" ]; then log "inside the image: $(chroot "$mnt" /bin/uname -m) (under $(sed -n 's/^interpreter //p' "$binfmt"))"; fi
log "running the image's CMD under unshare --net (rootfs $mnt)"
# A private mount namespace too: the /proc, /sys and /dev a container runtime would give are mounted there
# and vanish with it.
unshare --net --mount -- python3 - "$mnt" "$WORK/image.json" "${cpuinfo[@]}" <<'PY'
"""Inside the empty network namespace: start the image's CMD, wait for healthy, call the API, report."""
import json, os, signal, socket, subprocess, sys, time, urllib.error, urllib.request

mnt, image_json = sys.argv[1], sys.argv[2]
cpuinfo = sys.argv[3] if len(sys.argv) > 3 else None  # emulated arm64: the stand-in /proc/cpuinfo
config = json.load(open(image_json))["Docker"]["config"]
env = dict(item.split("=", 1) for item in config["Env"])
port = env.get("GRADIO_SERVER_PORT", "7860")
base = f"http://127.0.0.1:{port}"

def sh(*argv):
    subprocess.run(argv, check=True)

# What an OCI runtime mounts: proc, read-only sys, a small /dev with shm (multiprocessing locks need it).
for d in ("proc", "sys", "dev"):
    os.makedirs(f"{mnt}/{d}", exist_ok=True)
sh("mount", "-t", "proc", "proc", f"{mnt}/proc")
if cpuinfo:
    sh("mount", "--bind", cpuinfo, f"{mnt}/proc/cpuinfo")
sh("mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", f"{mnt}/sys")
sh("mount", "-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", f"{mnt}/dev")
for dev in ("null", "zero", "full", "random", "urandom", "tty"):
    open(f"{mnt}/dev/{dev}", "w").close()
    sh("mount", "--bind", f"/dev/{dev}", f"{mnt}/dev/{dev}")
os.makedirs(f"{mnt}/dev/shm")
sh("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm", f"{mnt}/dev/shm")
for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                     ("stderr", "/proc/self/fd/2")):
    os.symlink(target, f"{mnt}/dev/{name}")
# The /etc/hosts Docker writes into every container (Gradio's launch() calls itself on localhost).
hosts = f"{mnt}/etc/hosts"
open(hosts, "a").close()
with open(f"{mnt}/dev/shm/hosts", "w") as f:
    f.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
sh("mount", "--bind", f"{mnt}/dev/shm/hosts", hosts)
sh("ip", "link", "set", "lo", "up")
links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
print("network interfaces:", ", ".join(line.split(":")[1].strip() for line in links.splitlines()))
try:
    socket.create_connection(("pypi.org", 443), timeout=5)
    sys.exit("FAIL: the namespace can reach pypi.org; the check would prove nothing")
except OSError as exc:
    print(f"no network: connecting to pypi.org:443 fails ({exc})")

user = config.get("User") or "0:0"
# chroot applies none of the image's settings: user, env and working dir are set here from its config.
def in_image(argv, **kw):
    shell = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', config.get("WorkingDir") or "/"]
    return ["chroot", f"--userspec={user}", mnt, *shell, *argv]

cmd = (config.get("Entrypoint") or []) + config["Cmd"]
print(f"CMD {cmd} as {user} in {config.get('WorkingDir')}")
t0 = time.monotonic()
applog = open(f"/tmp/image-check-app-{os.getpid()}.log", "w+")  # the app's log, shown after; read for the calibration
proc = subprocess.Popen(in_image(cmd), env=env, stdout=applog, stderr=subprocess.STDOUT)
def get(path, data=None, timeout=10):
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()
try:
    while True:
        if proc.poll() is not None:
            sys.exit(f"FAIL: the app exited with {proc.returncode} before it was healthy")
        if time.monotonic() - t0 > 900:
            sys.exit("FAIL: not healthy after 900 s")
        try:
            status, body = get("/healthz", timeout=2)
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.25)
    healthy_s = time.monotonic() - t0
    print(f"healthy after {healthy_s:.1f} s: GET /healthz -> {status} {body}")
    uid = [l for l in open(f"/proc/{proc.pid}/status") if l.startswith("Uid:")][0].split()[1]
    print(f"serving process uid: {uid}")
    check = config["Healthcheck"]["Test"]
    hc = subprocess.run(in_image(check[1:]), env=env, capture_output=True, text=True, timeout=30)
    print(f"image HEALTHCHECK ({check[0]} {check[1]} ...) exit code: {hc.returncode} {hc.stderr.strip()[-300:]}")
    failures = [] if hc.returncode == 0 else ["HEALTHCHECK"]
    # The sentiment calibration was measured at build (the calibration stage): a start reads it, never recomputes.
    calibration = [l.strip() for l in open(applog.name, errors="replace") if "calibration bias" in l]
    print("sentiment calibration at start:", calibration[-1] if calibration else "no log line")
    if not calibration or f"read from {env['MODEL_DIR']}/" not in calibration[-1]:
        failures.append("calibration not read from the image")
    for text, mode in (("这家店的菜很好吃，服务也很周到，下次还来！", "both"), ("质量太差了，用了两天就坏了。", "emotion"),
                       ("你好，请用一句话介绍你自己。", "chat")):
        t = time.monotonic()
        payload = json.dumps({"text": text, "mode": mode}, ensure_ascii=False).encode()
        try:
            status, body = get("/api/infer", payload, timeout=600)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        print(f"POST /api/infer {mode}: {status} in {time.monotonic() - t:.1f} s: {body[:600]}")
        if status != 200 or not body.strip().startswith("{"):
            failures.append(f"/api/infer {mode}")
    hwm = [l for l in open(f"/proc/{proc.pid}/status") if l.startswith(("VmHWM", "VmRSS"))]
    print("serving process memory:", "; ".join(l.split(":")[0] + " " + " ".join(l.split()[1:]) for l in hwm))
finally:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    applog.seek(0)
    print("app log (last 40 lines):", *applog.read().splitlines()[-40:], sep="\n  ")
if failures:
    sys.exit(f"FAIL: {', '.join(failures)}")
print(f"PASS: healthy {healthy_s:.1f} s after start with no network; /healthz and /api/infer answered")
PY

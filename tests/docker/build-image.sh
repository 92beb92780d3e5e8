#!/bin/sh
# Builds warden's test image (default tag warden-test:latest) from the
# host's static busybox and python3. Needs a running Docker engine.
set -eu
tag=${1:-warden-test:latest}
here=$(cd "$(dirname "$0")" && pwd)
ctx=$(mktemp -d /tmp/warden-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/bin" "$root/usr/bin" "$root/tmp" "$root/workspace" "$root/etc"
# The engine gives a tmpfs mounted over /tmp the mode of the image's /tmp.
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
py=$(readlink -f /usr/bin/python3)
cp "$py" "$root/usr/bin/python3"
stdlib=$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
# The shared libraries of the interpreter and its extension modules, at the
# paths the loader looks for.
for lib in $(ldd "$py" "$stdlib"/lib-dynload/*.so 2>/dev/null | awk '/=>/ { print $3 } /ld-linux/ { print $1 }' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
mkdir -p "$root$stdlib"
tar -C "$stdlib" -cf - \
    --exclude='./config-*' --exclude='./test' --exclude='./idlelib' --exclude='./tkinter' \
    --exclude='./lib2to3' --exclude='./pydoc_data' --exclude='./ensurepip' --exclude='./distutils' \
    --exclude='__pycache__' --exclude='./site-packages' --exclude='./dist-packages' . |
    tar -C "$root$stdlib" -xf -
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
cp "$here/Dockerfile" "$ctx/Dockerfile"
docker build --quiet --network none -t "$tag" "$ctx" >/dev/null
echo "built $tag"

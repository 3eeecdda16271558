#!/bin/sh
# Build the Dockerfile's base image (luodi-base:<release>) from Debian packages, without any container registry:
# a minimal Debian root file system by debootstrap, imported into the local Docker daemon.
#
#   sudo deploy/docker/base-image.sh              # the host's Debian release (bookworm here)
#   sudo deploy/docker/base-image.sh bookworm http://deb.debian.org/debian
#
# Needs root, debootstrap and a running Docker daemon (apt-get install docker.io debootstrap). With a registry,
# skip this and build with `--build-arg BASE=debian:bookworm-slim` instead.
set -eu
release=${1:-$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")}
release=${release:-bookworm}
mirror=${2:-http://deb.debian.org/debian}
tag=luodi-base:$release
rootfs=$(mktemp -d /tmp/luodi-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase "$release" "$rootfs" "$mirror"
# the release's updates and security fixes too (debootstrap writes only "$release main")
if [ "$release" != sid ] && [ "$release" != unstable ]; then
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$mirror" "$release" "$mirror" "$release" "$release" > "$rootfs/etc/apt/sources.list"
fi
# like the official slim images: no package lists or caches, no documentation
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/tmp/* "$rootfs"/var/log/*.log
tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$tag"
echo "base image: $tag"

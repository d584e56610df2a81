#!/bin/sh
# Builds the nodeos kernel: tinyconfig + nodeos.config, everything built in.
#
# Usage: build.sh SOURCE_TARBALL CONFIG_FRAGMENT OUT_DIR
#        build.sh --check-config CONFIG_FRAGMENT DOT_CONFIG
# The first writes OUT_DIR/bzImage and OUT_DIR/config. `nodeos build` calls
# it (and caches OUT_DIR by the hash of the source, the fragment and this
# script); it is runnable by hand for debugging. The second only checks that
# every option the fragment sets survived Kconfig.
set -eu

# Kconfig drops options whose dependencies are unmet without a word; refuse that.
check_config() {
    fragment=$1 config=$2
    missing=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$fragment" | while IFS= read -r line; do
        grep -qx "$line" "$config" || echo "$line"
    done)
    if [ -n "$missing" ]; then
        echo "kernel config: these options from $fragment did not survive Kconfig:" >&2
        echo "$missing" >&2
        return 1
    fi
}

if [ "${1:-}" = --check-config ]; then
    check_config "$2" "$3"
    exit
fi

src=$1 fragment=$2 out=$3
jobs=${NODEOS_KERNEL_JOBS:-$(nproc)}

work=$out/work
rm -rf "$work"
mkdir -p "$work"
tar -xf "$src" -C "$work" --strip-components=1

cd "$work"
cat kernel/configs/tiny.config arch/x86/configs/tiny.config "$fragment" > nodeos-all.config
make -s ARCH=x86_64 KCONFIG_ALLCONFIG=nodeos-all.config allnoconfig
check_config "$fragment" .config

# Not -s: nodeos counts the "CC" lines to show progress.
make ARCH=x86_64 -j"$jobs" bzImage KBUILD_BUILD_USER=nodeos KBUILD_BUILD_HOST=nodeos \
    KBUILD_BUILD_TIMESTAMP="1970-01-01"
cp arch/x86/boot/bzImage "$out/bzImage"
cp .config "$out/config"
cd "$out"
rm -rf "$work"

#!/usr/bin/env bats
# install.bats - `make install DESTDIR=... PREFIX=/usr` puts every file where
# packagers and users expect it, the installed library is usable through
# pkg-config, and `make uninstall` removes exactly what install put there.

setup_file() {
    REPO=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
    ROOT=$BATS_FILE_TMPDIR/root
    export REPO ROOT
    # One install for the tests that inspect it; its log is shown on failure.
    local status=0
    env -i PATH="$PATH" HOME="$HOME" make -C "$REPO" install DESTDIR="$ROOT" PREFIX=/usr \
        > "$BATS_FILE_TMPDIR/install.log" 2>&1 || status=$?
    echo "$status" > "$BATS_FILE_TMPDIR/install.status"
}

setup() {
    load common
    cd "$BATS_TEST_TMPDIR"
    if [[ $(cat "$BATS_FILE_TMPDIR/install.status") != 0 ]]; then
        cat "$BATS_FILE_TMPDIR/install.log"
        fail "make install DESTDIR='$ROOT' PREFIX=/usr failed"
    fi
}

# The tools the Makefile installs: one per cmd/ds-*.c.
repo_tools() {
    local f
    for f in "$REPO"/cmd/ds-*.c; do
        [[ -e $f ]] || continue
        f=${f##*/}
        echo "${f%.c}"
    done
}

# pkg-config on the installed libds.pc, relocated into $ROOT.
pc() {
    PKG_CONFIG_PATH=$ROOT/usr/lib/pkgconfig pkg-config \
        --define-variable=prefix="$ROOT/usr" "$@"
}

@test "install: tools, libraries, headers, pkg-config file, man pages, completions" {
    local t h
    for t in $(repo_tools); do
        echo "# $t"
        [[ -f $ROOT/usr/bin/$t && -x $ROOT/usr/bin/$t ]]
        cmp "$REPO/man/$t.1" "$ROOT/usr/share/man/man1/$t.1"
        cmp "$REPO/completions/bash/$t" "$ROOT/usr/share/bash-completion/completions/$t"
        cmp "$REPO/completions/fish/$t.fish" \
            "$ROOT/usr/share/fish/vendor_completions.d/$t.fish"
    done
    cmp "$REPO/man/ds.7" "$ROOT/usr/share/man/man7/ds.7"
    cmp "$REPO/completions/zsh/_ds" "$ROOT/usr/share/zsh/site-functions/_ds"
    [[ -f $ROOT/usr/lib/libds.a ]]
    [[ -f $ROOT/usr/lib/libds.so.0 ]]
    [[ -L $ROOT/usr/lib/libds.so && $(readlink "$ROOT/usr/lib/libds.so") == libds.so.0 ]]
    [[ -f $ROOT/usr/lib/pkgconfig/libds.pc ]]
    [[ -f $ROOT/usr/include/ds.h ]]
    # every header that ds.h includes is there too; internal ones are not
    for h in $(sed -n 's/^#include "\(.*\)"$/\1/p' "$REPO/lib/ds.h"); do
        [[ -f $ROOT/usr/include/$h ]] || fail "ds.h includes $h, which is not installed"
    done
    [[ ! -e $ROOT/usr/include/ds_banned.h ]]
    run -0 find "$ROOT/usr/include" -name '*_impl.h'
    assert_output ""
}

@test "install: file modes (programs 755, data 644)" {
    local t
    for t in $(repo_tools); do
        run -0 stat -c %a "$ROOT/usr/bin/$t"
        assert_output 755
    done
    run -0 stat -c %a "$ROOT/usr/lib/libds.a" "$ROOT/usr/include/ds.h" \
        "$ROOT/usr/lib/pkgconfig/libds.pc" "$ROOT/usr/share/man/man7/ds.7"
    assert_output $'644\n644\n644\n644'
}

@test "install: the installed tools run" {
    local t
    for t in $(repo_tools); do
        run -0 --separate-stderr "$ROOT/usr/bin/$t" --version
        assert_output "$t $DS_VERSION"
    done
}

@test "install: pkg-config --cflags --libs libds works" {
    run -0 env PKG_CONFIG_PATH="$ROOT/usr/lib/pkgconfig" pkg-config --cflags --libs libds
    assert_output --regexp '(^| )-lds( |$)'
    run -0 env PKG_CONFIG_PATH="$ROOT/usr/lib/pkgconfig" pkg-config --modversion libds
    assert_output "$DS_VERSION"
    run -0 env PKG_CONFIG_PATH="$ROOT/usr/lib/pkgconfig" pkg-config --variable=libdir libds
    assert_output /usr/lib
    run -0 pc --cflags libds
    assert_output --partial "-I$ROOT/usr/include"
    run -0 pc --static --libs libds
    assert_output --partial "-L$ROOT/usr/lib"
    assert_output --regexp '-lzstd.*-lcjson.*-lpcre2-8'
}

@test "install: a program links the installed static libds via pkg-config --static" {
    cat > prog.c << 'EOF'
#include <stdio.h>
#include <ds.h>

int main(void) { return puts(ds_version()) < 0; }
EOF
    local f flags=()
    # -lds becomes -l:libds.a: the linker would take libds.so, which is in the
    # same directory
    for f in $(pc --static --cflags --libs libds); do
        [[ $f == -lds ]] && f=-l:libds.a
        flags+=("$f")
    done
    [[ " ${flags[*]} " == *" -l:libds.a "* ]]
    run -0 cc -std=c11 -Wall -Werror -o prog prog.c "${flags[@]}"
    run -0 readelf -d prog
    refute_output --partial libds
    run -0 ./prog
    assert_output "$DS_VERSION"
}

@test "install: a program links the installed shared libds" {
    cat > prog.c << 'EOF'
#include <stdio.h>
#include <ds.h>

int main(void) { return puts(ds_version()) < 0; }
EOF
    local flags
    flags=$(pc --cflags --libs libds)
    # shellcheck disable=SC2086
    run -0 cc -std=c11 -Wall -Werror -o prog prog.c $flags
    run -0 readelf -d prog
    assert_output --partial "[libds.so.0]"
    run -0 env LD_LIBRARY_PATH="$ROOT/usr/lib" ./prog
    assert_output "$DS_VERSION"
}

@test "uninstall: make uninstall leaves no files behind" {
    local root=$BATS_TEST_TMPDIR/root2
    run -0 env -i PATH="$PATH" HOME="$HOME" make -C "$REPO" install DESTDIR="$root" PREFIX=/usr
    run -0 find "$root" ! -type d
    refute_output ""
    run -0 env -i PATH="$PATH" HOME="$HOME" make -C "$REPO" uninstall DESTDIR="$root" PREFIX=/usr
    run -0 find "$root" ! -type d
    assert_output ""
}

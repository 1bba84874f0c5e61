# dskit - build, test and install. GNU make.
#
#   make                 libds (static + shared) and the tools
#   make check           C unit tests, fuzz seed replay, bats CLI tests, docs sync
#   make asan            the same tests built with ASan + UBSan (in build-asan/)
#   make ubsan           the same tests built with UBSan, OpenMP on (in build-ubsan/)
#   make check-valgrind  the CLI tests under valgrind
#   make fuzz            libFuzzer targets (clang), FUZZ_TIME seconds each
#   make install         PREFIX=/usr/local DESTDIR= (symmetric: make uninstall)
#   make man completions regenerate the committed man pages and completions
#   make demo            the toolkit on the committed demo model (under a minute)
#   make demo-model      retrain the demo model and its students (data/demo/README.md)
#
# Variables: CFLAGS (user, default -O2 -g), MOREFLAGS (appended), OPENMP=0 to
# build without OpenMP, DEVELOPER=1 for -Werror, O=DIR to build elsewhere.

VERSION    := 0.1.0
PREFIX     ?= /usr/local
EXEC_PREFIX ?= $(PREFIX)
BINDIR     ?= $(EXEC_PREFIX)/bin
LIBDIR     ?= $(EXEC_PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR    ?= $(PREFIX)/share
MANDIR     ?= $(DATADIR)/man
MAN1DIR    ?= $(MANDIR)/man1
MAN7DIR    ?= $(MANDIR)/man7
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSH_COMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
INSTALL    ?= install
INSTALL_PROGRAM ?= $(INSTALL)
INSTALL_DATA ?= $(INSTALL) -m 644
PKG_CONFIG ?= pkg-config
BATS       ?= bats
SCDOC      ?= scdoc

CC         ?= cc
CFLAGS     ?= -O2 -g
OPENMP     ?= 1
O          ?= .

DEPS       := libzstd libcjson libpcre2-8
DEP_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(DEPS))
DEP_LIBS   := $(shell $(PKG_CONFIG) --libs $(DEPS))

DS_CFLAGS  := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
              -Wvla -Wformat=2 -Ilib -DDS_VERSION='"$(VERSION)"'
ifeq ($(OPENMP),1)
DS_CFLAGS  += -fopenmp
OMP_LIBS   := -fopenmp
endif
ifeq ($(DEVELOPER),1)
DS_CFLAGS  += -Werror
endif
ALL_CFLAGS := $(CFLAGS) $(DS_CFLAGS) $(DEP_CFLAGS) $(MOREFLAGS)
ALL_LDFLAGS := $(LDFLAGS) $(MOREFLAGS)
LIBS       := $(DEP_LIBS) $(OMP_LIBS) -lm -lpthread

LIB_SRC    := $(sort $(wildcard lib/*.c))
LIB_HDR    := $(sort $(wildcard lib/ds*.h))
LIB_OBJ    := $(LIB_SRC:lib/%.c=$(O)/build/lib/%.o)
LIB_PIC    := $(LIB_SRC:lib/%.c=$(O)/build/pic/%.o)
LIBA       := $(O)/lib/libds.a
LIBSO_VER  := $(O)/lib/libds.so.0
LIBSO      := $(O)/lib/libds.so

TOOL_SRC   := $(sort $(wildcard cmd/ds-*.c))
TOOLS      := $(TOOL_SRC:cmd/%.c=%)
TOOL_BINS  := $(TOOLS:%=$(O)/cmd/%)
CLI_OBJ    := $(O)/build/cmd/cli.o

UNIT_SRC   := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS  := $(UNIT_SRC:tests/unit/%.c=$(O)/build/tests/%)
FUZZ_SRC   := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_REPLAY := $(FUZZ_SRC:tests/fuzz/%.c=$(O)/build/fuzz/%)

MAN_SCD    := $(sort $(wildcard man/*.scd))
MAN_OUT    := $(MAN_SCD:.scd=)

.PHONY: all lib tools check check-unit check-fuzz check-cli check-docs check-man \
        asan ubsan check-valgrind fuzz install uninstall man completions clean bench demo \
        demo-model
.DEFAULT_GOAL := all
.SECONDARY:

all: lib tools
lib: $(LIBA) $(LIBSO)
tools: $(TOOL_BINS)

$(O)/build/lib/%.o: lib/%.c $(LIB_HDR) $(wildcard lib/*_impl.h)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(O)/build/pic/%.o: lib/%.c $(LIB_HDR) $(wildcard lib/*_impl.h)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -fPIC -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

# The shared library exports exactly the functions declared in lib/ds*.h.
$(O)/build/libds.map: $(LIB_HDR)
	@mkdir -p $(@D)
	{ echo '{ global:'; grep -ohE '\bds_[a-z0-9_]+\(' $(LIB_HDR) | tr -d '(' | sort -u | \
	  sed 's/$$/;/'; echo 'local: *; };'; } > $@

$(LIBSO_VER): $(LIB_PIC) $(O)/build/libds.map
	@mkdir -p $(@D)
	$(CC) -shared -Wl,-soname,libds.so.0 -Wl,--version-script=$(O)/build/libds.map \
	  $(ALL_LDFLAGS) -o $@ $(LIB_PIC) $(LIBS)

$(LIBSO): $(LIBSO_VER)
	ln -sf libds.so.0 $@

$(O)/build/cmd/%.o: cmd/%.c cmd/cli.h $(LIB_HDR)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(O)/cmd/ds-%: $(O)/build/cmd/ds-%.o $(CLI_OBJ) $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(O)/build/tests/%: tests/unit/%.c tests/unit/test.h tests/unit/simd_levels.h tests/unit/tmpdir.h $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(LIBA) $(LIBS)

$(O)/build/fuzz/%: tests/fuzz/%.c tests/fuzz/replay.c $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< tests/fuzz/replay.c $(LIBA) $(LIBS)

$(O)/build/bench/%: bench/%.c $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBA) $(LIBS)

bench: all $(O)/build/bench/gen-checkpoint $(O)/build/bench/membw $(O)/build/bench/mtp \
       $(O)/build/bench/ctx $(O)/build/bench/route
	sh bench/convert.sh
	sh bench/run.sh
	bash bench/decode.sh
	bash bench/kvcache.sh
	bash bench/route.sh
	sh bench/mtp.sh
	sh bench/scaling.sh

# The demo: the committed demo model (data/demo/demo.gguf, see
# data/demo/README.md) to Hugging Face safetensors and back, quantized to
# q8_0, run on a prompt, and its held-out perplexity (with ds-eval, when
# built). About half a minute.
DEMO_OUT   := $(O)/build/demo
demo: all
	@mkdir -p $(DEMO_OUT)
	$(O)/cmd/ds-convert -f --to safetensors data/demo/demo.gguf -o $(DEMO_OUT)/demo-hf
	ls -l $(DEMO_OUT)/demo-hf
	$(O)/cmd/ds-convert -f $(DEMO_OUT)/demo-hf -o $(DEMO_OUT)/demo.gguf
	$(O)/cmd/ds-quantize -f -t q8_0 $(DEMO_OUT)/demo.gguf -o $(DEMO_OUT)/demo-q8_0.gguf 2>&1 | \
	  tail -n 4
	$(O)/cmd/ds-run -m $(DEMO_OUT)/demo-q8_0.gguf -p "ROMEO:" -n 48 --seed 1
	@echo
	@tail -n +36001 data/shakespeare/input.txt > $(DEMO_OUT)/valid.txt
	@if [ -x $(O)/cmd/ds-eval ]; then \
	  echo "$(O)/cmd/ds-eval -m $(DEMO_OUT)/demo-q8_0.gguf --perplexity $(DEMO_OUT)/valid.txt --ctx 128"; \
	  $(O)/cmd/ds-eval -m $(DEMO_OUT)/demo-q8_0.gguf --perplexity $(DEMO_OUT)/valid.txt --ctx 128; \
	else echo "ds-eval is not built here: perplexity skipped"; fi

# The demo model, rebuilt from data/shakespeare/input.txt as data/demo/README.md
# describes: tokenizer, teacher, KD student, data-only student, then their
# held-out losses (build/demo-model/report.txt). Deterministic (fixed seeds;
# the training gives the same bits for any DEMO_T). Replaces data/demo/*.gguf
# and *.svg. The KD run computes the teacher's logits as it goes: 150 steps
# see a third of the text, so a --teacher-cache (one teacher pass over all
# of it) would cost more here.
DEMO_B     := $(O)/build/demo-model
DEMO_T     ?= 2
DISTILL    := $(O)/cmd/ds-distill -T $(DEMO_T) --no-progress -f
DEMO_OPTS  := --batch 8 --ctx 128 --lr 3e-3 --min-lr 3e-4 --seed 1 --eval-windows 96 \
              --data $(DEMO_B)/train.txt --valid $(DEMO_B)/valid.txt --outtype f16
DEMO_TEACH := --steps 300 --warmup 20 --eval-every 50
DEMO_STUD  := --steps 150 --warmup 20 --eval-every 50
demo-model: tools
	rm -rf $(DEMO_B) && mkdir -p $(DEMO_B)
	head -n 36000 data/shakespeare/input.txt > $(DEMO_B)/train.txt
	tail -n +36001 data/shakespeare/input.txt > $(DEMO_B)/valid.txt
	$(DISTILL) --train-tokenizer 1024 --data $(DEMO_B)/train.txt --vocab-out $(DEMO_B)/vocab.gguf
	$(DISTILL) --init data/demo/config.json --vocab $(DEMO_B)/vocab.gguf $(DEMO_OPTS) \
	  $(DEMO_TEACH) --log $(DEMO_B)/teacher.jsonl --plot data/demo/teacher.svg \
	  -o data/demo/demo.gguf
	$(DISTILL) --init data/demo/student.json -m data/demo/demo.gguf --topk 64 --temperature 1 \
	  $(DEMO_OPTS) $(DEMO_STUD) --log $(DEMO_B)/student-kd.jsonl --plot data/demo/student.svg -o data/demo/student.gguf
	$(DISTILL) --init data/demo/student.json --vocab $(DEMO_B)/vocab.gguf $(DEMO_OPTS) \
	  $(DEMO_STUD) --log $(DEMO_B)/student-data.jsonl -o $(DEMO_B)/student-data.gguf
	sh data/demo/report.sh $(DEMO_B) | tee $(DEMO_B)/report.txt

# ---- tests -------------------------------------------------------------------

check: all check-unit check-fuzz check-cli check-docs

check-unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do \
	  echo "== $$t"; DS_TESTDATA=tests/data $(DS_EXEC_PREFIX) $$t; done

check-fuzz: $(FUZZ_REPLAY)
	@set -e; for t in $(FUZZ_REPLAY); do n=$$(basename $$t); \
	  echo "== replay $$n"; $(DS_EXEC_PREFIX) $$t tests/fuzz/corpus/$${n#fuzz_}; done

check-cli: tools
	DS_BIN=$(abspath $(O)/cmd) DS_EXEC_PREFIX="$(DS_EXEC_PREFIX)" \
	  BATS_LIB_PATH=/usr/lib/bats $(BATS) --tap tests/cli

check-docs: tools check-man
	DS_BIN=$(abspath $(O)/cmd) MAKE="$(MAKE)" SCDOC="$(SCDOC)" sh tests/check-docs.sh

check-man:
	@if command -v mandoc >/dev/null; then mandoc -Tlint -W warning $(MAN_OUT); \
	else echo "mandoc not installed; skipped"; fi

SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
asan:
	$(MAKE) O=build-asan OPENMP=0 MOREFLAGS="$(SAN_FLAGS) $(MOREFLAGS)" CFLAGS="-O1 -g" check

ubsan:
	$(MAKE) O=build-ubsan MOREFLAGS="-fsanitize=undefined -fno-sanitize-recover=all $(MOREFLAGS)" check

# Errors and definite leaks fail; "possibly lost" blocks (libgomp's threads,
# tools that die by a signal) are not shown, so that stderr stays as tested.
VALGRIND   := valgrind --error-exitcode=99 -q --leak-check=full --errors-for-leak-kinds=definite \
              --show-possibly-lost=no --suppressions=$(abspath tests/valgrind.supp)
check-valgrind: all
	$(MAKE) DS_EXEC_PREFIX="$(VALGRIND)" check-unit check-cli

# libFuzzer: each tests/fuzz/fuzz_NAME.c built with clang (ASan + UBSan) over
# the library, run FUZZ_TIME seconds from its seed corpus tests/fuzz/corpus/NAME
# (read only: new inputs go to build-fuzz/corpus/NAME; a crash stops the run
# and is left in build-fuzz/ as crash-*). FUZZ=NAME... runs only those targets;
# FUZZ_ARGS are passed to libFuzzer. See tests/fuzz/README.md.
FUZZ_CC    ?= clang
FUZZ_TIME  ?= 60
FUZZ       ?= $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
FUZZ_ARGS  ?=
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Ilib -fno-omit-frame-pointer \
              -fsanitize=address,undefined -fno-sanitize-recover=undefined $(DEP_CFLAGS)
FUZZ_LIB_OBJ := $(LIB_SRC:lib/%.c=build-fuzz/lib/%.o)

build-fuzz/lib/%.o: lib/%.c $(LIB_HDR) $(wildcard lib/*_impl.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

build-fuzz/libds.a: $(FUZZ_LIB_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c build-fuzz/libds.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build-fuzz/libds.a $(DEP_LIBS) -lm -lpthread

fuzz: $(FUZZ:%=build-fuzz/fuzz_%)
	@set -e; for n in $(FUZZ); do mkdir -p build-fuzz/corpus/$$n; \
	  d=; [ -f tests/fuzz/$$n.dict ] && d=-dict=tests/fuzz/$$n.dict; \
	  echo "== fuzz $$n ($(FUZZ_TIME) s)"; \
	  DS_TESTDATA=tests/data build-fuzz/fuzz_$$n -max_total_time=$(FUZZ_TIME) \
	    -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 -print_final_stats=1 \
	    -artifact_prefix=build-fuzz/crash-$$n- $$d $(FUZZ_ARGS) \
	    build-fuzz/corpus/$$n tests/fuzz/corpus/$$n; done

# ---- docs ----------------------------------------------------------------------

# The pages are dated MAN_EPOCH (not the build time), so that regenerating
# them is reproducible; bump it with VERSION. MANOUT=DIR writes the pages to
# DIR instead (tests/check-docs.sh compares them with the committed ones).
# MAN_FIX removes the empty paragraph macros scdoc emits (after .SH/.SS,
# before .SH/.SS/.RE), which mandoc -Tlint reports as warnings.
MAN_EPOCH  := 1795305600
MANOUT     ?= man
MAN_FIX    := awk '/^\.P$$/ { if (held || prev ~ /^\.S[HS]( |$$)/) next; held = 1; next } \
                   held && /^\.RE/ { print; prev = $$0; next } \
                   held { if ($$0 !~ /^\.S[HS]( |$$)/) print ".P"; held = 0 } \
                   { print; prev = $$0 }'

man: $(MAN_SCD:man/%.scd=$(MANOUT)/%)
$(MANOUT)/%: man/%.scd
	@mkdir -p $(@D)
	SOURCE_DATE_EPOCH=$(MAN_EPOCH) $(SCDOC) < $< > $@.tmp && $(MAN_FIX) < $@.tmp > $@.tmp2 \
	  && mv $@.tmp2 $@; s=$$?; rm -f $@.tmp $@.tmp2; exit $$s

completions: tools
	DS_BIN=$(abspath $(O)/cmd) sh completions/gen.sh

# ---- install ---------------------------------------------------------------------

# Installed headers: the public API (ds_banned.h is a build-time helper).
PUB_HDR    := $(filter-out lib/ds_banned.h,$(LIB_HDR))
PC_LIBDIR  := $(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))
PC_INCDIR  := $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))
ifeq ($(OPENMP),1)
PC_OMP     := -fopenmp
endif

# Regenerated on every install, since PREFIX and LIBDIR may differ each time.
.PHONY: libds.pc
libds.pc: libds.pc.in
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(PC_LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(PC_INCDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@DEPS@|$(DEPS)|' -e 's|@OMP@|$(PC_OMP)|' $< > $@

install: all libds.pc
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	  $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MAN1DIR) $(DESTDIR)$(MAN7DIR) \
	  $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSH_COMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(INSTALL_PROGRAM) $(TOOL_BINS) $(DESTDIR)$(BINDIR)/
	$(INSTALL_DATA) $(LIBA) $(DESTDIR)$(LIBDIR)/libds.a
	$(INSTALL_PROGRAM) $(LIBSO_VER) $(DESTDIR)$(LIBDIR)/libds.so.0
	ln -sf libds.so.0 $(DESTDIR)$(LIBDIR)/libds.so
	$(INSTALL_DATA) $(PUB_HDR) $(DESTDIR)$(INCLUDEDIR)/
	$(INSTALL_DATA) libds.pc $(DESTDIR)$(PKGCONFIGDIR)/libds.pc
	$(INSTALL_DATA) $(TOOLS:%=man/%.1) $(DESTDIR)$(MAN1DIR)/
	$(INSTALL_DATA) man/ds.7 $(DESTDIR)$(MAN7DIR)/ds.7
	$(INSTALL_DATA) $(TOOLS:%=completions/bash/%) $(DESTDIR)$(BASHCOMPDIR)/
	$(INSTALL_DATA) completions/zsh/_ds $(DESTDIR)$(ZSH_COMPDIR)/_ds
	$(INSTALL_DATA) $(TOOLS:%=completions/fish/%.fish) $(DESTDIR)$(FISHCOMPDIR)/

uninstall:
	rm -f $(TOOLS:%=$(DESTDIR)$(BINDIR)/%)
	rm -f $(DESTDIR)$(LIBDIR)/libds.a $(DESTDIR)$(LIBDIR)/libds.so.0 $(DESTDIR)$(LIBDIR)/libds.so
	rm -f $(PUB_HDR:lib/%=$(DESTDIR)$(INCLUDEDIR)/%)
	rm -f $(DESTDIR)$(PKGCONFIGDIR)/libds.pc
	rm -f $(TOOLS:%=$(DESTDIR)$(MAN1DIR)/%.1) $(DESTDIR)$(MAN7DIR)/ds.7
	rm -f $(TOOLS:%=$(DESTDIR)$(BASHCOMPDIR)/%) $(DESTDIR)$(ZSH_COMPDIR)/_ds
	rm -f $(TOOLS:%=$(DESTDIR)$(FISHCOMPDIR)/%.fish)

clean:
	rm -rf build build-asan build-ubsan build-fuzz lib/libds.a lib/libds.so lib/libds.so.0 \
	  $(TOOLS:%=cmd/%) libds.pc

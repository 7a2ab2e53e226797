# Envicutor. `make` builds build/envicutor; `make test` runs the whole test suite (it is what
# the README's second command and .ci/run call); `make bench` prints the benchmarks.

CC      ?= gcc
PKGS    := jansson libseccomp libmicrohttpd sqlite3
# libmicrohttpd is compiled against but loaded with dlopen by `serve` (src/http/mhd_loader.c).
LINK_PKGS := jansson libseccomp sqlite3
WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes \
           -Wpointer-arith -Wundef -Wvla \
           -Wno-format-truncation  # messages are cut on purpose; path lengths are checked up front
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=gnu17 -D_GNU_SOURCE -Isrc $(WARN) $(CFLAGS) $(shell pkg-config --cflags $(PKGS))
LIBS    := $(shell pkg-config --libs $(LINK_PKGS)) -lm

# Layers, bottom up: common <- sandbox <- privsep <- pipeline <- http <- cli (docs/architecture.md).
LIB_SRC     := $(filter-out src/cli/main.c,$(wildcard src/*/*.c))

B ?= build
LIB_OBJ := $(LIB_SRC:%.c=$(B)/obj/%.o)
MAIN_OBJ := $(B)/obj/src/cli/main.o

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
PROG_SRC := $(wildcard tests/sandbox/progs/*.c)
PROG_BIN := $(PROG_SRC:tests/sandbox/progs/%.c=$(B)/progs/%)

.PHONY: all asan unit progs test test-unit test-sandbox test-cgroup2 bench format format-check \
        clean deps fuzz install uninstall deb

all: $(B)/envicutor

$(B)/envicutor: $(LIB_OBJ) $(MAIN_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LIBS)

$(B)/obj/%.o: %.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/tests/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB_OBJ) $(LIBS) -lcmocka

# Programs the sandbox tests run inside boxes (no sanitizers: they are the untrusted side).
$(B)/progs/%: tests/sandbox/progs/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu17 -D_GNU_SOURCE -O1 -Wall -Wextra -Werror -o $@ $< -lpthread -lm

# The sandbox's C interface as the server's helper uses it, against bare fork+exec (make bench).
$(B)/bench/helper_run: bench/helper_run.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB_OBJ) $(LIBS)

unit: $(UNIT_BIN)
progs: $(PROG_BIN)

# The sanitizer build: same sources, ASan + UBSan, into build-asan/.
asan:
	$(MAKE) B=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" all unit

test:
	./scripts/run-tests

test-unit: unit
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

# The sandbox suite in a throw-away VM whose kernel has cgroup v2 only (docs/cgroups.md).
test-cgroup2: all progs unit
	./tests/vm/run-in-vm.sh tests/vm/cgroup2-suite.sh

# libFuzzer targets (clang) for request parsing and the helper's message checks, with ASan and
# UBSan, into build-fuzz/; fuzz/run-short is the bounded run of the test suite, docs/fuzzing.md
# describes long campaigns.
FUZZ_SRC := src/http/request.c src/pipeline/config.c src/pipeline/runtime_store.c \
            src/privsep/protocol.c $(wildcard src/common/*.c)
FUZZ_BIN := $(patsubst fuzz/%.c,build-fuzz/%,$(wildcard fuzz/fuzz_*.c))

fuzz: $(FUZZ_BIN)

build-fuzz/fuzz_%: fuzz/fuzz_%.c $(FUZZ_SRC) $(wildcard src/*/*.h)
	@mkdir -p build-fuzz
	clang -std=gnu17 -D_GNU_SOURCE -Isrc -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all $(shell pkg-config --cflags $(PKGS)) -o $@ $< $(FUZZ_SRC) $(LIBS)

bench: all progs $(B)/bench/helper_run
	./bench/run

FORMAT_FILES = $(wildcard src/*/*.c src/*/*.h tests/unit/*.c tests/sandbox/progs/*.c bench/*.c bench/*.h \
                          fuzz/*.c)

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

# Installation (man envicutor): PREFIX and DESTDIR as usual. The unit's ExecStart names the
# installed binary; SYSTEMD_UNIT_DIR is where systemd looks for units of packages.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/envicutor
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
VERSION := $(shell sed -n 's/^\#define ENVICUTOR_VERSION "\(.*\)"/\1/p' src/cli/version.h)
DOCS := README.md docs/server.md docs/sandbox.md docs/cgroups.md docs/judge.md docs/nix.md \
        docs/architecture.md docs/threat-model.md docs/openapi.yaml

install: $(B)/envicutor
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DATADIR)/envicutor/catalog \
	    $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	install -m 0755 $(B)/envicutor $(DESTDIR)$(BINDIR)/envicutor
	install -m 0644 man/envicutor.1 $(DESTDIR)$(MANDIR)/man1/envicutor.1
	install -m 0644 runtimes/catalog/*.json $(DESTDIR)$(DATADIR)/envicutor/catalog/
	install -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	sed 's|@BINDIR@|$(BINDIR)|g' dist/systemd/envicutor.service.in > \
	    $(DESTDIR)$(SYSTEMD_UNIT_DIR)/envicutor.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/envicutor.service

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/envicutor $(DESTDIR)$(MANDIR)/man1/envicutor.1 \
	    $(DESTDIR)$(SYSTEMD_UNIT_DIR)/envicutor.service
	rm -rf $(DESTDIR)$(DATADIR)/envicutor $(DESTDIR)$(DOCDIR)

deps:
	./scripts/install-deps

clean:
	rm -rf build build-asan build-fuzz

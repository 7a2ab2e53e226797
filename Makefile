# Envicutor. `make` builds build/envicutor; `make test` runs the whole test suite (it is what
# the README's second command and .ci/run call); `make bench` prints the benchmarks.

CC      ?= gcc
PKGS    := jansson libseccomp libmicrohttpd sqlite3 hiredis
# libmicrohttpd, SQLite, hiredis and wslay are compiled against but loaded with dlopen when
# first used (src/common/lazylib.h): the one-shot `envicutor sandbox` uses none of them.
LINK_PKGS := jansson libseccomp
WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes \
           -Wpointer-arith -Wundef -Wvla \
           -Wno-format-truncation  # messages are cut on purpose; path lengths are checked up front
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=gnu17 -D_GNU_SOURCE -Isrc $(WARN) $(CFLAGS) $(shell pkg-config --cflags $(PKGS))
LIBS    := $(shell pkg-config --libs $(LINK_PKGS)) -lm

# Layers, bottom up: common <- sandbox <- privsep <- pipeline <- http <- cli (docs/architecture.md).
LIB_SRC     := $(filter-out src/cli/main.c,$(wildcard src/*/*.c))

B ?= build
LIB_OBJ := $(LIB_SRC:%.c=$(B)/obj/%.o) $(B)/obj/gen/web_files.o
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

# The playground's files, embedded in the binary (docs/playground.md).
WEB_FILES := $(sort $(wildcard web/*))

# web itself too: a file removed changes the directory, not any file left.
$(B)/gen/web_files.c: web $(WEB_FILES) scripts/embed-web
	@mkdir -p $(dir $@)
	./scripts/embed-web $(WEB_FILES) > $@.tmp && mv $@.tmp $@

$(B)/obj/gen/web_files.o: $(B)/gen/web_files.c src/http/static_files.h
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

$(B)/bench/run_parts: bench/run_parts.c $(LIB_OBJ)
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
FUZZ_SRC := src/http/request.c src/pipeline/checker.c src/pipeline/config.c src/pipeline/runtime_store.c \
            src/privsep/protocol.c $(wildcard src/common/*.c)
FUZZ_BIN := $(patsubst fuzz/%.c,build-fuzz/%,$(wildcard fuzz/fuzz_*.c))

fuzz: $(FUZZ_BIN)

build-fuzz/fuzz_%: fuzz/fuzz_%.c $(FUZZ_SRC) $(wildcard src/*/*.h)
	@mkdir -p build-fuzz
	clang -std=gnu17 -D_GNU_SOURCE -Isrc -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all $(shell pkg-config --cflags $(PKGS)) -o $@ $< $(FUZZ_SRC) $(LIBS)

bench: all progs $(B)/bench/helper_run $(B)/bench/run_parts
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
        docs/architecture.md docs/threat-model.md docs/openapi.yaml docs/async.md \
        docs/playground.md

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

# A Debian package from the tree, with dpkg-deb alone (no debhelper): the files of
# `make install PREFIX=/usr`, the unit where Debian 12's systemd looks for packages' units,
# maintainer scripts from dist/debian. Shared library dependencies come from dpkg-shlibdeps;
# libmicrohttpd, SQLite, hiredis and wslay are loaded with dlopen (src/common/lazylib.h), so
# they are named by hand.
DEB_ARCH = $(shell dpkg --print-architecture)
DEB_ROOT = $(B)/deb/envicutor_$(VERSION)_$(DEB_ARCH)
DEB = $(B)/envicutor_$(VERSION)_$(DEB_ARCH).deb

deb: $(DEB)

$(DEB): $(B)/envicutor man/envicutor.1 dist/debian/* dist/systemd/envicutor.service.in \
        $(wildcard runtimes/catalog/*.json) $(DOCS)
	rm -rf $(DEB_ROOT)
	$(MAKE) install DESTDIR=$(abspath $(DEB_ROOT)) PREFIX=/usr SYSTEMD_UNIT_DIR=/lib/systemd/system
	strip --strip-unneeded --remove-section=.comment --remove-section=.note \
	    $(DEB_ROOT)/usr/bin/envicutor
	gzip -9n $(DEB_ROOT)/usr/share/man/man1/envicutor.1
	install -m 0644 dist/debian/copyright $(DEB_ROOT)/usr/share/doc/envicutor/copyright
	gzip -9n < dist/debian/changelog > $(DEB_ROOT)/usr/share/doc/envicutor/changelog.gz
	install -d $(DEB_ROOT)/etc/default $(DEB_ROOT)/DEBIAN
	install -m 0600 dist/debian/default $(DEB_ROOT)/etc/default/envicutor
	install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm $(DEB_ROOT)/DEBIAN/
	echo /etc/default/envicutor > $(DEB_ROOT)/DEBIAN/conffiles
	cd $(DEB_ROOT) && find usr lib -type f -exec md5sum {} + | sort -k2 > DEBIAN/md5sums
	mkdir -p $(B)/deb/shlibs/debian && echo 'Source: envicutor' > $(B)/deb/shlibs/debian/control
	shlibs=$$(cd $(B)/deb/shlibs && dpkg-shlibdeps -O $(abspath $(DEB_ROOT))/usr/bin/envicutor \
	          | sed 's/^shlibs:Depends=//') && \
	size=$$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1) && \
	sed -e 's/@VERSION@/$(VERSION)/' -e 's/@ARCH@/$(DEB_ARCH)/' -e "s/@SIZE@/$$size/" \
	    -e "s/@SHLIBDEPS@/$$shlibs/" dist/debian/control.in > $(DEB_ROOT)/DEBIAN/control
	dpkg-deb --root-owner-group -Zxz --build $(DEB_ROOT) $@

deps:
	./scripts/install-deps

clean:
	rm -rf build build-asan build-fuzz

# evloop.h — the one entry point: make test, make test-windows, make demo,
# make bench, make install, make format, make format-check. Builds go to
# build/. make test runs what this machine's tools allow and names what it
# skips; make test STRICT=1 (CI) makes any skip an error.

CC      ?= cc
BUILD   := build
BACKENDS := select poll epoll
# One backend only (examples too), in a build directory of its own:
# make test BACKEND=kqueue
ifdef BACKEND
BACKENDS := $(BACKEND)
BUILD    := build/only-$(BACKEND)
EX_FLAGS  = -D$($(BACKEND)_MACRO) $($(BACKEND)_CFLAGS)
EX_LIBS   = $($(BACKEND)_LIBS)
endif
select_MACRO := EVLOOP_BACKEND_SELECT
poll_MACRO   := EVLOOP_BACKEND_POLL
epoll_MACRO  := EVLOOP_BACKEND_EPOLL
kqueue_MACRO := EVLOOP_BACKEND_KQUEUE

# kqueue is the system's on macOS and the BSDs. Elsewhere a provider
# (libkqueue) comes in through KQUEUE_CFLAGS / KQUEUE_LIBS, by default from
# pkg-config (then the run needs LD_LIBRARY_PATH if the library is not on
# the loader's path); e.g. for a libkqueue installed under $$P:
#   make test BACKEND=kqueue KQUEUE_CFLAGS=-I$$P/include/kqueue \
#     KQUEUE_LIBS="-L$$P/lib -Wl,-rpath,$$P/lib -lkqueue -lpthread"
UNAME := $(shell uname -s)
KQUEUE_NATIVE := $(filter Darwin FreeBSD OpenBSD NetBSD DragonFly,$(UNAME))
ifeq ($(KQUEUE_NATIVE),)
ifneq ($(filter kqueue,$(BACKENDS)),)
ifndef KQUEUE_LIBS
KQUEUE_CFLAGS := $(shell pkg-config --cflags libkqueue 2>/dev/null)
KQUEUE_LIBS   := $(shell pkg-config --libs libkqueue 2>/dev/null)
endif
ifeq ($(strip $(KQUEUE_LIBS)),)
$(error the kqueue backend on $(UNAME) needs a provider (libkqueue): set KQUEUE_CFLAGS and KQUEUE_LIBS, or let pkg-config find libkqueue)
endif
endif
# A provider built for the system's libc: a static musl build cannot link it.
kqueue_SKIP := musl
kqueue_SKIP_WHY := the kqueue provider is built for the system's libc; a static musl build cannot link it
endif
kqueue_CFLAGS = $(KQUEUE_CFLAGS)
kqueue_LIBS   = $(KQUEUE_LIBS)
# Tests include the kqueue header too, to tell libkqueue (EVFILT_LIBKQUEUE).
kqueue_TFLAGS = -D$(kqueue_MACRO)

WARN := -Wall -Wextra -Wpedantic -Werror
# Every test build (not the examples, not the benchmarks) checks the loop's
# invariants after each iteration and at close (EVLOOP_VERIFY in evloop.h).
TEST_DEFS := -DEVLOOP_VERIFY

# Build variants of the test suite: compiler and flags.
o2_CC      := gcc
o2_FLAGS   := -std=c99 $(WARN) -O2 -g
# asan_CC and tsan_CC: clang, else gcc (see "What this machine has").
asan_FLAGS := -std=c11 $(WARN) -O1 -g -fno-omit-frame-pointer \
              -fsanitize=address,undefined -fno-sanitize-recover=all
tsan_FLAGS := -std=c11 $(WARN) -O1 -g -fsanitize=thread
tcc_CC     := tcc
tcc_FLAGS  := -Wall -Werror -g
nothr_CC   := gcc
nothr_FLAGS := -std=c99 $(WARN) -O2 -g -DEVLOOP_NO_THREADS
# Subsystems left out: files (EVLOOP_NO_FS), signals and subprocesses
# (EVLOOP_NO_PROCESS), both (nosub), networking (nonet; it takes the
# subprocesses with it), and the core-only build (core: loop, timers,
# futures, tasks, fd watching); make test-subsets runs them alone. The
# compile checks build every combination (tests/subset_combos.sh).
nofs_CC      := gcc
nofs_FLAGS   := -std=c99 $(WARN) -O2 -g -DEVLOOP_NO_FS
noproc_CC    := gcc
noproc_FLAGS := -std=c99 $(WARN) -O2 -g -DEVLOOP_NO_PROCESS
nosub_CC     := gcc
nosub_FLAGS  := -std=c99 $(WARN) -O2 -g -DEVLOOP_NO_FS -DEVLOOP_NO_PROCESS
nonet_CC     := gcc
nonet_FLAGS  := -std=c99 $(WARN) -O2 -g -DEVLOOP_NO_NET
CORE_ONLY    := -DEVLOOP_NO_NET -DEVLOOP_NO_FS -DEVLOOP_NO_SYNC -DEVLOOP_NO_COMPOSE -DEVLOOP_NO_EXECUTOR
core_CC      := gcc
core_FLAGS   := -std=c99 $(WARN) -O2 -g $(CORE_ONLY)
SUBSET_VARIANTS := nofs noproc nosub nonet core
# kqueue only: wake-ups through the self-pipe, as where EVFILT_USER is missing
kqpipe_CC  := gcc
kqpipe_FLAGS := -std=c99 $(WARN) -O2 -g -DEVLOOP_HAVE_EVFILT_USER=0
musl_CC    := musl-gcc
# musl: also the fork+exec spawn and the SIGCHLD exit paths
musl_FLAGS := -std=c99 $(WARN) -O2 -static -DEVLOOP_HAVE_PIDFD=0
LIBS       := -lpthread
# Cross builds run under qemu-user (make test-cross): 32-bit and big-endian.
# Static, so no guest libc has to be found at run time (qemu -L with a
# dynamic i686 binary mixed the cross ld.so with the host's /lib32 libc,
# and every forked child spun forever). Static glibc makes ld warn about
# getaddrinfo; its "files dns" lookups are built into libc, so it works.
i686_CC     := i686-linux-gnu-gcc
i686_FLAGS  := -std=c99 $(WARN) -O2 -static
i686_QEMU   := qemu-i386
s390x_CC    := s390x-linux-gnu-gcc
s390x_FLAGS := -std=c99 $(WARN) -O2 -static
s390x_QEMU  := qemu-s390x
CROSS       := i686 s390x
# The "alt" builds (epoll only) take other branches. i686: the 64-bit
# off_t and time_t that 32-bit distributions now build with. s390x: no
# pidfd, so the SIGCHLD exit path (qemu-user refuses seccomp, so the tests
# cannot take pidfd_open away at run time). Not on i686: qemu-i386 7.2
# loses live x87 registers when it delivers a signal (a 20 s timeout came
# out as 0 while SIGCHLD arrived), a qemu bug that frequent SIGCHLDs hit.
i686alt_CC     := $(i686_CC)
i686alt_FLAGS  := $(i686_FLAGS) -D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64
i686alt_QEMU   := $(i686_QEMU)
s390xalt_CC    := $(s390x_CC)
s390xalt_FLAGS := $(s390x_FLAGS) -DEVLOOP_HAVE_PIDFD=0
s390xalt_QEMU  := $(s390x_QEMU)
CROSS_VARIANTS := $(foreach a,$(CROSS),$(a) $(a)alt)

# ---- What this machine has ----------------------------------------------
# make test needs only gcc and make. Every other part of the run needs a
# tool that may be missing; a missing one makes that part a skip, named
# once in the run with the Debian package that brings the tool, and
# counted in the last line ("N passed, N failed, K skipped"). Each skip is
# one entry of SKIPS (entries end with ';'), which tests/run.sh prints.
# STRICT=1 (what .ci/run uses) turns any skip into an error: CI cannot
# lose a variant because a package went missing. The scripts run.sh starts
# (tests/net_examples.sh, tests/install_check.sh) find their own clients
# and report their own skips.
STRICT ?=
have  = $(shell command -v $(1) >/dev/null 2>&1 && echo 1)
# Can compiler $(1) build and link a program with flags $(2)?
links = $(shell printf 'int main(void){return 0;}\n' | \
          $(1) $(2) -x c - -o /dev/null >/dev/null 2>&1 && echo 1)
CLANG_PKG := clang libclang-rt-14-dev
SANITIZE_ASAN := -fsanitize=address,undefined
SANITIZE_TSAN := -fsanitize=thread
HAVE_CLANG := $(call have,clang)
SKIPS :=
# The sanitizer variants prefer clang; where clang (or its runtime) is
# missing, gcc's own sanitizers stand in if their runtime links.
pick_sanitizer_cc = $(if $(and $(HAVE_CLANG),$(call links,clang,$(1))),clang,$(if $(call links,gcc,$(1)),gcc))
ifeq ($(origin asan_CC),undefined)
asan_CC := $(call pick_sanitizer_cc,$(SANITIZE_ASAN))
endif
ifeq ($(origin tsan_CC),undefined)
tsan_CC := $(call pick_sanitizer_cc,$(SANITIZE_TSAN))
endif
ifeq ($(asan_CC),)
SKIPS += ASan+UBSan variant (apt-get install $(CLANG_PKG));
endif
ifeq ($(tsan_CC),)
SKIPS += TSan variant (apt-get install $(CLANG_PKG));
endif
ifeq ($(HAVE_CLANG),)
SKIPS += clang compile checks, C99 and C11 (apt-get install clang);
endif
ifeq ($(call have,g++),)
SKIPS += C++ compile check (apt-get install g++);
endif
ifeq ($(call have,$(tcc_CC)),)
SKIPS += tcc variant (apt-get install tcc);
endif
ifeq ($(call have,$(musl_CC)),)
SKIPS += musl variant (apt-get install musl-tools);
endif
ifeq ($(call have,valgrind),)
SKIPS += valgrind variant (apt-get install valgrind);
endif
# The variants this machine can build and run (run.sh's VARIANTS), in
# run order.
HAVE_VARIANTS := o2 $(if $(asan_CC),asan) $(if $(tsan_CC),tsan) \
                 $(if $(call have,$(tcc_CC)),tcc) $(if $(call have,$(musl_CC)),musl) \
                 nothr kqpipe $(SUBSET_VARIANTS) $(if $(call have,valgrind),valgrind)
# A note (not a skip) when gcc stands in for clang's sanitizers.
SANITIZER_NOTE := $(if $(filter gcc,$(asan_CC) $(tsan_CC)),the sanitizer variants use gcc's runtime (clang's: apt-get install $(CLANG_PKG)))
# make test-cross: the architectures whose cross gcc and qemu-user are here.
i686_PKGS  := gcc-i686-linux-gnu libc6-dev-i386-cross qemu-user
s390x_PKGS := gcc-s390x-linux-gnu libc6-dev-s390x-cross qemu-user
HAVE_CROSS := $(foreach a,$(CROSS),$(if $(and $(call have,$($(a)_CC)),$(call have,$($(a)_QEMU))),$(a)))
CROSS_SKIPS := $(foreach a,$(filter-out $(HAVE_CROSS),$(CROSS)),$(a) builds under qemu-user (apt-get install $($(a)_PKGS));)
# make test-windows: mingw-w64 and wine.
WIN_CC ?= x86_64-w64-mingw32-gcc
WIN_SKIPS := $(if $(and $(call have,$(WIN_CC)),$(call have,wine)),,Windows builds under wine (apt-get install gcc-mingw-w64-x86-64-win32 wine wine64);)
# STRICT=1: a goal that would skip something stops here, before building.
strict_check = $(if $(and $(filter 1,$(STRICT)),$(filter $(1),$(MAKECMDGOALS)),$(strip $(2))),\
                 $(error STRICT=1: make $(1) would skip: $(strip $(2))))
$(call strict_check,test,$(SKIPS))
$(call strict_check,test-cross,$(CROSS_SKIPS))
$(call strict_check,test-windows,$(WIN_SKIPS))

TEST_SRCS := $(sort $(wildcard tests/t_*.c))
TESTS     := $(basename $(notdir $(TEST_SRCS)))
# Tests that start threads; they also run under ThreadSanitizer.
THREADED_TESTS := $(filter t_threadsafe t_conform t_crossthread t_executor t_dns t_close t_config t_netfault t_netapi t_signal t_kqueue t_allocfail t_fdlimit t_cancel t_reenter t_cancel_sync t_budget t_ref t_wakeskip t_cancel_fs,$(TESTS))
# Built with EVLOOP_NO_THREADS too (t_config brings its own configuration).
NOTHREAD_TESTS := $(filter-out $(THREADED_TESTS),$(TESTS))
EXAMPLES  := $(basename $(notdir $(wildcard examples/*.c)))
# Servers run until a signal, and the client needs a server: the driver
# tests/net_examples.sh runs them against real clients (socat, nc, curl,
# wrk). The other examples stop by themselves: `make demo` runs those.
SERVER_EXAMPLES := $(filter echo_server http_server echo_client,$(EXAMPLES))
# The TLS examples need an engine: tests/tls_examples.sh runs them.
SERVER_EXAMPLES += $(filter https_server tls_client starttls,$(EXAMPLES))
DEMO_EXAMPLES := $(filter-out $(SERVER_EXAMPLES),$(EXAMPLES))
BENCHES   := $(basename $(notdir $(wildcard bench/*.c)))

VARIANTS := o2 asan tsan tcc musl nothr kqpipe $(SUBSET_VARIANTS) $(CROSS_VARIANTS)
# Every (variant, backend) pair gets its own implementation object.
define variant_rules
$(BUILD)/$(1)-$(2)/impl.o: tests/impl.c evloop.h
	@mkdir -p $$(@D)
	$$($(1)_CC) $$($(1)_FLAGS) $(TEST_DEFS) -D$$($(2)_MACRO) $$($(2)_CFLAGS) -c $$< -o $$@
$(BUILD)/$(1)-$(2)/%: tests/%.c tests/test.h tests/net_test.h tests/proc_test.h tests/alloc_test.h tests/sweep_test.h tests/seccomp_test.h tests/gate_test.h tests/core_test.h evloop.h $(BUILD)/$(1)-$(2)/impl.o
	@mkdir -p $$(@D)
	$$($(1)_CC) $$($(1)_FLAGS) $(TEST_DEFS) $$($(2)_TFLAGS) $$($(2)_CFLAGS) $$< $(BUILD)/$(1)-$(2)/impl.o -o $$@ $$($(2)_LIBS) $(LIBS)
endef
$(foreach v,$(VARIANTS),$(foreach b,$(BACKENDS),$(eval $(call variant_rules,$(v),$(b)))))

# The binaries of variant $(1) for tests $(2), on the backends that variant
# can build (a kqueue provider may not link with every compiler).
bins = $(foreach b,$(BACKENDS),$(if $(filter $(1),$($(b)_SKIP)),,$(addprefix $(BUILD)/$(1)-$(b)/,$(2))))
SKIPPED := $(foreach b,$(BACKENDS),$(addsuffix -$(b),$($(b)_SKIP)))
SKIP_WHY := $(foreach b,$(BACKENDS),$($(b)_SKIP_WHY))

.PHONY: all test test-quick test-subsets test-cross compile-checks demo bench format format-check clean examples \
        test-windows windows fuzz soak

all: examples $(call bins,o2,$(TESTS))

examples: $(addprefix $(BUILD)/examples/,$(EXAMPLES))
$(BUILD)/examples/http_server: examples/http_request.h examples/server.h
$(BUILD)/examples/echo_server: examples/server.h
$(BUILD)/examples/%: examples/%.c evloop.h
	@mkdir -p $(@D)
	$(o2_CC) $(o2_FLAGS) $(EX_FLAGS) $< -o $@ $(EX_LIBS) $(LIBS)

# The whole suite: every backend with gcc -O2, ASan+UBSan (clang, else
# gcc), tcc and musl; the threaded tests under TSan; the others with
# EVLOOP_NO_THREADS; valgrind; compile checks; nm. tests/run.sh prints each
# result and ends with "N passed, N failed, K skipped".
# Only the variants whose toolchain is here (HAVE_VARIANTS); the others
# are named as skipped (SKIPS). Then the script checks: the network
# examples against real clients, make install through pkg-config, the
# version's agreement, and the docs against the code.
have_bins = $(if $(filter $(1),$(HAVE_VARIANTS)),$(call bins,$(1),$(2)))
TEST_BINS := $(call have_bins,o2,$(TESTS)) $(call have_bins,asan,$(TESTS)) \
             $(call have_bins,tsan,$(THREADED_TESTS)) $(call have_bins,tcc,$(TESTS)) \
             $(call have_bins,musl,$(TESTS)) $(call have_bins,nothr,$(NOTHREAD_TESTS))
# The subset variants: the tests of what they leave out (which then say
# they skip) and the core's.
SUBSET_TESTS := $(filter t_fs t_fswatch t_signal t_subprocess t_process t_kqueue t_loop t_timers t_interval t_hooks t_ref t_metrics t_budget t_future t_task t_executor t_sync t_queue t_taskgroup,$(TESTS))
TEST_BINS += $(foreach v,$(SUBSET_VARIANTS),$(call bins,$(v),$(SUBSET_TESTS)))
# The kqpipe variant: the threaded tests (t_kqueue among them), on kqueue.
KQPIPE_TESTS := $(THREADED_TESTS)
ifneq ($(filter kqueue,$(BACKENDS)),)
TEST_BINS += $(addprefix $(BUILD)/kqpipe-kqueue/,$(KQPIPE_TESTS))
endif
TEST_CHECKS := tests/net_examples.sh tests/install_check.sh tests/version_check.sh \
               tests/docs_check.sh tests/tls_check.sh tests/ergonomics_check.sh
test: $(TEST_BINS) examples compile-checks $(BUILD)/evloop.pc
	@$(if $(SANITIZER_NOTE),echo "note: $(SANITIZER_NOTE)";) \
	  VARIANTS="$(HAVE_VARIANTS)" SKIPS="$(SKIPS)" STRICT="$(STRICT)" CHECKS="$(TEST_CHECKS)" \
	  SKIPPED="$(SKIPPED)" SKIP_WHY="$(SKIP_WHY)" KQPIPE_TESTS="$(KQPIPE_TESTS)" SUBSET_TESTS="$(SUBSET_TESTS)" \
	  TLS_TESTS="$(TLS_TESTS)" TLS_ENGINES_OK="$(TLS_EX_ENGINES)" \
	  sh tests/run.sh "$(BUILD)" "$(BACKENDS)" "$(TESTS)" "$(THREADED_TESTS)" "$(DEMO_EXAMPLES)" "$(NOTHREAD_TESTS)"

# Quick loop for development: gcc -O2 only.
test-quick: $(call bins,o2,$(TESTS))
	@VARIANTS=o2 TLS_TESTS="$(TLS_TESTS)" sh tests/run.sh "$(BUILD)" "$(BACKENDS)" "$(TESTS)" "" ""

# The builds without a subsystem, and their tests (also part of make test).
test-subsets: $(foreach v,$(SUBSET_VARIANTS),$(call bins,$(v),$(SUBSET_TESTS)))
	@VARIANTS="$(SUBSET_VARIANTS)" SUBSET_TESTS="$(SUBSET_TESTS)" sh tests/run.sh "$(BUILD)" "$(BACKENDS)" "$(SUBSET_TESTS)" "" ""

# The suite built by the i686 (32-bit) and s390x (big-endian) cross
# compilers, run under qemu-user: every backend, and the alt builds.
# EVL_TEST_QEMU=1 lets the tests work around qemu-user's known limits,
# saying so; run.sh stops each binary after CROSS_TIMEOUT seconds.
# An architecture whose tools are missing is a skip (CROSS_SKIPS).
CROSS_BINS := $(foreach a,$(HAVE_CROSS),$(call bins,$(a),$(TESTS)) \
                $(addprefix $(BUILD)/$(a)alt-epoll/,$(TESTS)))
test-cross: $(CROSS_BINS)
	@EVL_TEST_QEMU=1 VARIANTS="$(foreach a,$(HAVE_CROSS),$(a) $(a)alt)" \
	  SKIPS="$(CROSS_SKIPS)" STRICT="$(STRICT)" LOG=$(BUILD)/test-cross-log.txt \
	  $(foreach v,$(CROSS_VARIANTS),$(v)_QEMU=$($(v)_QEMU)) \
	  sh tests/run.sh "$(BUILD)" "$(BACKENDS)" "$(TESTS)" "" ""

# gcc and clang as C99 and C11, the header as C++, and the nm check
# (clang and g++ where installed; SKIPS names them otherwise).
# tests/include_twice.c: the declarations, then the implementation, in
# one file.
CHECK_SRCS := tests/impl.c tests/include_twice.c $(TEST_SRCS) $(wildcard examples/*.c)
compile-checks: $(BUILD)/checks.stamp
# The tests the subset variants run (SUBSET_TESTS) must also compile with
# files and processes left out, and in the core-only build. Every
# combination of the EVLOOP_NO_* subsystem macros (tests/subset_combos.sh)
# compiles on the default backend; files, processes, both, and the
# core-only build on each backend.
SUBSET_SRCS = $(addprefix tests/,$(addsuffix .c,$(SUBSET_TESTS)))
$(BUILD)/checks.stamp: evloop.h tests/cpp_compile.cpp tests/win_names.c $(CHECK_SRCS) tests/nm_check.sh tests/subset_combos.sh
	@mkdir -p $(BUILD)
	for cc in gcc $(if $(HAVE_CLANG),clang); do for std in c99 c11; do \
	  for f in $(CHECK_SRCS); do \
	    $$cc -std=$$std $(WARN) -fsyntax-only $$f || exit 1; \
	  done; \
	  for b in $(BACKENDS); do \
	    $$cc -std=$$std $(WARN) -fsyntax-only -DEVLOOP_BACKEND_$$(echo $$b | tr a-z A-Z) $(KQUEUE_CFLAGS) tests/impl.c || exit 1; \
	    for sub in -DEVLOOP_NO_FS -DEVLOOP_NO_PROCESS "-DEVLOOP_NO_FS -DEVLOOP_NO_PROCESS" "$(CORE_ONLY)"; do \
	      $$cc -std=$$std $(WARN) -fsyntax-only $$sub -DEVLOOP_BACKEND_$$(echo $$b | tr a-z A-Z) $(KQUEUE_CFLAGS) tests/impl.c || exit 1; \
	    done; \
	  done; \
	  sh tests/subset_combos.sh | while read -r sub; do \
	    $$cc -std=$$std $(WARN) -fsyntax-only $$sub tests/impl.c || { echo "failed: $$cc -std=$$std $$sub"; exit 1; }; \
	  done || exit 1; \
	  for f in $(SUBSET_SRCS); do \
	    $$cc -std=$$std $(WARN) -fsyntax-only -DEVLOOP_NO_FS -DEVLOOP_NO_PROCESS $$f || exit 1; \
	    $$cc -std=$$std $(WARN) -fsyntax-only $(CORE_ONLY) $$f || exit 1; \
	  done; done; done
	$(if $(call have,g++),g++ -std=c++11 -Wall -Wextra -Werror -c tests/cpp_compile.cpp -o $(BUILD)/cpp_compile.o)
	$(if $(call have,g++),printf '\043define EVLOOP_IMPLEMENTATION\n\043include "evloop.h"\n' | \
	  g++ -x c++ -std=c++11 -Wall -Wextra -Werror $(CORE_ONLY) -c - -o $(BUILD)/cpp_core.o)
	if command -v $(WIN_CC) >/dev/null 2>&1; then \
	  $(WIN_CC) -std=c99 $(WARN) -fsyntax-only tests/win_names.c || exit 1; \
	  for sub in -DEVLOOP_NO_FS -DEVLOOP_NO_PROCESS -DEVLOOP_NO_NET "-DEVLOOP_NO_NET -DEVLOOP_NO_FS" "$(CORE_ONLY)"; do \
	    $(WIN_CC) -std=c99 $(WARN) -c $$sub tests/impl.c -o $(BUILD)/win_subset.o || exit 1; \
	  done; fi
	sh tests/nm_check.sh gcc
	printf 'int evl__leak(void);\nint evl__leak(void) { return 0; }\n' >$(BUILD)/nm_leak.c
	if sh tests/nm_check.sh gcc $(BUILD)/nm_leak.c >/dev/null; then \
	  echo "nm_check.sh let an exported evl__ symbol through"; exit 1; fi
	@touch $@

# Windows: the tests cross-compiled with mingw-w64 into build/win/ and run
# under wine (tests/run_windows.sh: a fresh prefix under build/, each binary
# on iocp and select under a timeout), with the examples that build on
# Windows; the ones that stop by themselves run as smoke tests (not
# subprocess_date/_streams: they run `date`, which Windows lacks).
WIN_FLAGS    := -std=c99 $(WARN) -O2
WIN_LIBS     := -static -lws2_32 -lpthread
WIN_BACKENDS := iocp select
WIN_DIR      := $(BUILD)/win
WIN_EXAMPLES_BUILT := display_date echo_client echo_server hello_world \
                      subprocess_date subprocess_streams tasks tcp_streams
WIN_EXAMPLES_RUN   := display_date hello_world tasks tcp_streams
WIN_EXES := $(addprefix $(WIN_DIR)/,$(addsuffix .exe,$(TESTS))) \
            $(addprefix $(WIN_DIR)/examples/,$(addsuffix .exe,$(WIN_EXAMPLES_BUILT)))
$(WIN_DIR)/impl.o: tests/impl.c evloop.h
	@mkdir -p $(@D)
	$(WIN_CC) $(WIN_FLAGS) $(TEST_DEFS) -c $< -o $@
$(WIN_DIR)/%.exe: tests/%.c tests/test.h tests/net_test.h tests/proc_test.h tests/alloc_test.h tests/sweep_test.h tests/gate_test.h tests/core_test.h evloop.h $(WIN_DIR)/impl.o
	$(WIN_CC) $(WIN_FLAGS) $(TEST_DEFS) $< $(WIN_DIR)/impl.o -o $@ $(WIN_LIBS)
$(WIN_DIR)/examples/%.exe: examples/%.c examples/server.h evloop.h
	@mkdir -p $(@D)
	$(WIN_CC) $(WIN_FLAGS) $< -o $@ $(WIN_LIBS)
windows: $(WIN_EXES)
# Without mingw-w64 or wine, one skip (WIN_SKIPS; an error with STRICT=1).
ifeq ($(WIN_SKIPS),)
test-windows: $(WIN_EXES)
	@sh tests/run_windows.sh "$(BUILD)" "$(WIN_BACKENDS)" "$(TESTS)" "$(WIN_EXAMPLES_RUN)"
else
test-windows:
	@echo "skipped: $(WIN_SKIPS:;=)"; echo "0 passed, 0 failed, 1 skipped"
endif

# ---- make install / make uninstall ----------------------------------------
# The header under $(PREFIX)/include and a pkg-config file under
# $(PREFIX)/lib/pkgconfig, staged under DESTDIR if given. The version comes
# from the header's EVLOOP_VERSION_STRING (its only home).
PREFIX  ?= /usr/local
DESTDIR ?=
VERSION := $(shell sed -n 's/^\#define EVLOOP_VERSION_STRING "\(.*\)"$$/\1/p' evloop.h)
# Windows links ws2_32; POSIX needs pthreads.
PC_LIBS := $(if $(filter MINGW% MSYS% CYGWIN% Windows_NT,$(UNAME) $(OS)),-lws2_32,-lpthread)
$(BUILD)/evloop.pc: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' 'prefix=$(PREFIX)' 'includedir=$${prefix}/include' '' \
	  'Name: evloop' \
	  'Description: asyncio'"'"'s event loop for C, in one header (define EVLOOP_IMPLEMENTATION in one file)' \
	  'Version: $(VERSION)' 'Cflags: -I$${includedir}' 'Libs: $(PC_LIBS)' >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv -f $@.tmp $@
install: $(BUILD)/evloop.pc
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 evloop.h $(DESTDIR)$(PREFIX)/include/evloop.h
	install -m 644 $(BUILD)/evloop.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/evloop.pc
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/evloop.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/evloop.pc
.PHONY: install uninstall FORCE
FORCE:

# ---- TLS (issue 14) -----------------------------------------------------
# t_tls is also an ordinary test: built without an engine it tests that
# every TLS entry point says EVL_ENOTSUP (Windows too). Here it is built
# once per engine (EVLOOP_TLS_OPENSSL / EVLOOP_TLS_MBEDTLS) in TLS_VARIANTS
# on every backend, into $(BUILD)/VARIANT-BACKEND/tls-ENGINE/t_tls, linked
# with OpenSSL as well (the tests make their certificates and some peers
# with it). An engine whose headers are missing is skipped, and the run
# says so with the package to install.
TLS_ENGINES  := openssl mbedtls
TLS_VARIANTS := o2 asan
openssl_TLS_MACRO := EVLOOP_TLS_OPENSSL
openssl_TLS_LIBS  := -lssl -lcrypto
openssl_TLS_HDRS  := openssl/ssl.h
openssl_TLS_PKG   := libssl-dev
mbedtls_TLS_MACRO := EVLOOP_TLS_MBEDTLS
mbedtls_TLS_LIBS  := -lmbedtls -lmbedx509 -lmbedcrypto -lssl -lcrypto
mbedtls_TLS_HDRS  := mbedtls/ssl.h openssl/ssl.h
mbedtls_TLS_PKG   := libmbedtls-dev and libssl-dev
tls_have_hdr = $(shell printf '\043include <$(1)>\n' | $(o2_CC) -E -x c - >/dev/null 2>&1 && echo y)
TLS_OK      := $(foreach e,$(TLS_ENGINES),$(if $(strip $(foreach h,$($(e)_TLS_HDRS),$(if $(call tls_have_hdr,$(h)),,n))),,$(e)))
TLS_MISSING := $(filter-out $(TLS_OK),$(TLS_ENGINES))
# A missing engine is a skip of make test like the others (SKIPS: named
# once, counted in the last line, an error with STRICT=1).
TLS_SKIPS := $(foreach e,$(TLS_MISSING),TLS engine $(e) (apt-get install $(subst and ,,$($(e)_TLS_PKG)));)
# The TLS examples meet real peers: curl and the openssl program.
TLS_PEERS_MISSING := $(strip $(foreach t,curl openssl,$(if $(call have,$(t)),,$(t))))
TLS_EX_ENGINES := $(if $(TLS_PEERS_MISSING),,$(TLS_OK))
TLS_SKIPS += $(if $(and $(strip $(TLS_OK)),$(TLS_PEERS_MISSING)),TLS examples against real peers (apt-get install $(TLS_PEERS_MISSING));)
SKIPS += $(TLS_SKIPS)
$(call strict_check,test,$(TLS_SKIPS))
$(call strict_check,test-tls,$(TLS_SKIPS))
define tls_rules
$(BUILD)/$(1)-$(2)/tls-$(3)/impl.o: tests/impl.c evloop.h
	@mkdir -p $$(@D)
	$$($(1)_CC) $$($(1)_FLAGS) $(TEST_DEFS) -D$$($(2)_MACRO) -D$$($(3)_TLS_MACRO) $$($(2)_CFLAGS) -c $$< -o $$@
$(BUILD)/$(1)-$(2)/tls-$(3)/t_tls: tests/t_tls.c tests/test.h tests/net_test.h evloop.h $(BUILD)/$(1)-$(2)/tls-$(3)/impl.o
	$$($(1)_CC) $$($(1)_FLAGS) $(TEST_DEFS) -D$$($(3)_TLS_MACRO) $$($(2)_TFLAGS) $$($(2)_CFLAGS) $$< $(BUILD)/$(1)-$(2)/tls-$(3)/impl.o -o $$@ $$($(3)_TLS_LIBS) $$($(2)_LIBS) $(LIBS)
endef
$(foreach v,$(TLS_VARIANTS),$(foreach b,$(BACKENDS),$(foreach e,$(TLS_ENGINES),$(eval $(call tls_rules,$(v),$(b),$(e))))))
tls_bins = $(foreach v,$(1),$(foreach b,$(BACKENDS),$(foreach e,$(TLS_OK),$(BUILD)/$(v)-$(b)/tls-$(e)/t_tls)))
# (Under make test the main run names the missing engines; make test-tls
# alone names them here.)
tls_run = @VARIANTS="$(1)" LOG=$(BUILD)/test-tls-log.txt STRICT="$(STRICT)" \
  SKIPS="$(if $(filter test,$(MAKECMDGOALS)),,$(TLS_SKIPS))" \
  sh tests/run.sh "$(BUILD)" "$(BACKENDS)" "$(foreach e,$(TLS_OK),tls-$(e)/t_tls)" "" ""
# The TLS examples, per engine, against curl, openssl s_client / s_server.
TLS_EXAMPLES := https_server tls_client starttls
define tls_example_rules
$(BUILD)/examples-tls-$(1)/%: examples/%.c examples/http_server.c examples/server.h evloop.h
	@mkdir -p $$(@D)
	$(o2_CC) $(o2_FLAGS) -D$($(1)_TLS_MACRO) $(EX_FLAGS) $$< -o $$@ $($(1)_TLS_LIBS) $(EX_LIBS) $(LIBS)
endef
$(foreach e,$(TLS_ENGINES),$(eval $(call tls_example_rules,$(e))))
TLS_EXAMPLE_BINS := $(foreach e,$(TLS_EX_ENGINES),$(addprefix $(BUILD)/examples-tls-$(e)/,$(TLS_EXAMPLES)))
.PHONY: test-tls test-tls-quick tls-examples
test-tls: $(call tls_bins,$(TLS_VARIANTS)) tls-examples
	$(call tls_run,$(TLS_VARIANTS))
test-tls-quick: $(call tls_bins,o2) tls-examples
	$(call tls_run,o2)
tls-examples: $(TLS_EXAMPLE_BINS)
	@for e in $(TLS_EX_ENGINES); do sh tests/tls_examples.sh $(BUILD)/examples-tls-$$e $$e || exit 1; done
# make test runs the TLS builds with the other tests of their variant
# (run.sh adds TLS_TESTS to o2's and asan's lists) and the examples through
# tests/tls_check.sh (TLS_EX_ENGINES); what is missing is in TLS_SKIPS.
TLS_TESTS := $(foreach e,$(TLS_OK),tls-$(e)/t_tls)
test: $(call tls_bins,$(filter $(TLS_VARIANTS),$(HAVE_VARIANTS))) $(TLS_EXAMPLE_BINS)
test-quick: $(call tls_bins,o2) $(TLS_EXAMPLE_BINS)

demo: examples
	@for e in $(DEMO_EXAMPLES); do echo "== examples/$$e"; $(BUILD)/examples/$$e || exit 1; done
	@echo "== the servers: $(BUILD)/examples/echo_server [--port N], $(BUILD)/examples/http_server [--port N] (Ctrl-C stops them)"

bench:
	@$(MAKE) -C bench

# ---- issue 11: fuzzing (its own target; not part of make test) ----------
# libFuzzer targets in tests/fuzz/ (clang -fsanitize=fuzzer,address,
# undefined), each run for FUZZ_SECONDS from its seed corpus in
# tests/fuzz/corpus/NAME/ (never written to: new inputs go to
# build/fuzz/corpus-NAME/). A crash is saved as build/fuzz/NAME-crash-*;
# copied into tests/fuzz/corpus/NAME/ it is replayed by every run.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_TARGETS := stream http addr
FUZZ_FLAGS   := -std=c11 $(WARN) -g -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h evloop.h examples/http_request.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) $< -o $@ $(LIBS)
# The targets run at the same time (each for FUZZ_SECONDS), reported in
# order.
fuzz: $(addprefix $(BUILD)/fuzz/fuzz_,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD)/fuzz/corpus-$$t; \
	  ( $(BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(BUILD)/fuzz/$$t- $(BUILD)/fuzz/corpus-$$t tests/fuzz/corpus/$$t \
	    >$(BUILD)/fuzz/$$t.log 2>&1; echo $$? >$(BUILD)/fuzz/$$t.rc ) & \
	done; wait; \
	for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS) s"; \
	  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE' $(BUILD)/fuzz/$$t.log; \
	  if [ "$$(cat $(BUILD)/fuzz/$$t.rc)" -ne 0 ]; then tail -n 40 $(BUILD)/fuzz/$$t.log; echo "fuzz_$$t FAILED (log: $(BUILD)/fuzz/$$t.log)"; exit 1; fi; \
	done

# ---- issue 11: soak (its own target; not part of make test) -------------
# tests/soak.c: one loop under mixed load for SOAK_SECONDS with ASan+UBSan
# (echo clients, timers, subprocesses, signals, threadsafe calls, executor
# jobs; it checks bytes, fds, RSS and zombies and prints its totals), and
# its threaded part (timers, threadsafe calls, executor) under TSan.
SOAK_SECONDS ?= 60
$(BUILD)/soak/soak-asan: tests/soak.c evloop.h
	@mkdir -p $(@D)
	$(asan_CC) $(asan_FLAGS) $< -o $@ $(LIBS)
$(BUILD)/soak/soak-tsan: tests/soak.c evloop.h
	@mkdir -p $(@D)
	$(tsan_CC) $(tsan_FLAGS) $< -o $@ $(LIBS)
# The two run at the same time; the TSan run's output follows.
soak: $(BUILD)/soak/soak-asan $(BUILD)/soak/soak-tsan
	@$(BUILD)/soak/soak-tsan --threaded-only $(SOAK_SECONDS) >$(BUILD)/soak/tsan.log 2>&1 & \
	  tsan=$$!; $(BUILD)/soak/soak-asan $(SOAK_SECONDS); asan=$$?; \
	  wait $$tsan; rc=$$?; echo "== soak-tsan --threaded-only"; cat $(BUILD)/soak/tsan.log; \
	  [ $$asan -eq 0 ] && [ $$rc -eq 0 ]

format:
	clang-format -i evloop.h tests/*.c tests/*.h tests/*.cpp tests/fuzz/*.c tests/fuzz/*.h examples/*.c examples/*.h bench/*.c

format-check:
	clang-format --dry-run --Werror evloop.h tests/*.c tests/*.h tests/*.cpp tests/fuzz/*.c tests/fuzz/*.h examples/*.c examples/*.h bench/*.c

clean:
	rm -rf $(BUILD)
	-$(MAKE) -C bench clean

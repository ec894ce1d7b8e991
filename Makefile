# evloop.h — the one entry point: make test, make test-windows, make demo,
# make bench, make format, make format-check. Builds go to build/.

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

# Build variants of the test suite: compiler and flags.
o2_CC      := gcc
o2_FLAGS   := -std=c99 $(WARN) -O2 -g
asan_CC    := clang
asan_FLAGS := -std=c11 $(WARN) -O1 -g -fno-omit-frame-pointer \
              -fsanitize=address,undefined -fno-sanitize-recover=all
tsan_CC    := clang
tsan_FLAGS := -std=c11 $(WARN) -O1 -g -fsanitize=thread
tcc_CC     := tcc
tcc_FLAGS  := -Wall -Werror -g
nothr_CC   := gcc
nothr_FLAGS := -std=c99 $(WARN) -O2 -g -DEVLOOP_NO_THREADS
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

TEST_SRCS := $(sort $(wildcard tests/t_*.c))
TESTS     := $(basename $(notdir $(TEST_SRCS)))
# Tests that start threads; they also run under ThreadSanitizer.
THREADED_TESTS := $(filter t_threadsafe t_executor t_dns t_close t_config t_netfault t_netapi t_signal t_kqueue,$(TESTS))
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

VARIANTS := o2 asan tsan tcc musl nothr kqpipe $(CROSS_VARIANTS)
# Every (variant, backend) pair gets its own implementation object.
define variant_rules
$(BUILD)/$(1)-$(2)/impl.o: tests/impl.c evloop.h
	@mkdir -p $$(@D)
	$$($(1)_CC) $$($(1)_FLAGS) -D$$($(2)_MACRO) $$($(2)_CFLAGS) -c $$< -o $$@
$(BUILD)/$(1)-$(2)/%: tests/%.c tests/test.h tests/net_test.h tests/proc_test.h evloop.h $(BUILD)/$(1)-$(2)/impl.o
	@mkdir -p $$(@D)
	$$($(1)_CC) $$($(1)_FLAGS) $$($(2)_TFLAGS) $$($(2)_CFLAGS) $$< $(BUILD)/$(1)-$(2)/impl.o -o $$@ $$($(2)_LIBS) $(LIBS)
endef
$(foreach v,$(VARIANTS),$(foreach b,$(BACKENDS),$(eval $(call variant_rules,$(v),$(b)))))

# The binaries of variant $(1) for tests $(2), on the backends that variant
# can build (a kqueue provider may not link with every compiler).
bins = $(foreach b,$(BACKENDS),$(if $(filter $(1),$($(b)_SKIP)),,$(addprefix $(BUILD)/$(1)-$(b)/,$(2))))
SKIPPED := $(foreach b,$(BACKENDS),$(addsuffix -$(b),$($(b)_SKIP)))
SKIP_WHY := $(foreach b,$(BACKENDS),$($(b)_SKIP_WHY))

.PHONY: all test test-quick test-cross compile-checks demo bench format format-check clean examples \
        test-windows windows

all: examples $(call bins,o2,$(TESTS))

examples: $(addprefix $(BUILD)/examples/,$(EXAMPLES))
$(BUILD)/examples/%: examples/%.c evloop.h
	@mkdir -p $(@D)
	$(o2_CC) $(o2_FLAGS) $(EX_FLAGS) $< -o $@ $(EX_LIBS) $(LIBS)

# The whole suite: every backend with gcc -O2, clang ASan+UBSan, tcc and
# musl; the threaded tests under TSan; the others with EVLOOP_NO_THREADS;
# valgrind; compile checks; nm.
# tests/run.sh prints each result and ends with "N passed, N failed".
TEST_BINS := $(call bins,o2,$(TESTS)) $(call bins,asan,$(TESTS)) \
             $(call bins,tsan,$(THREADED_TESTS)) $(call bins,tcc,$(TESTS)) \
             $(call bins,musl,$(TESTS)) $(call bins,nothr,$(NOTHREAD_TESTS))
# The kqpipe variant: the threaded tests (t_kqueue among them), on kqueue.
KQPIPE_TESTS := $(THREADED_TESTS)
ifneq ($(filter kqueue,$(BACKENDS)),)
TEST_BINS += $(addprefix $(BUILD)/kqpipe-kqueue/,$(KQPIPE_TESTS))
endif
test: $(TEST_BINS) examples compile-checks
	@SKIPPED="$(SKIPPED)" SKIP_WHY="$(SKIP_WHY)" KQPIPE_TESTS="$(KQPIPE_TESTS)" sh tests/run.sh "$(BUILD)" "$(BACKENDS)" "$(TESTS)" "$(THREADED_TESTS)" "$(DEMO_EXAMPLES)" "$(NOTHREAD_TESTS)"

# Quick loop for development: gcc -O2 only.
test-quick: $(call bins,o2,$(TESTS))
	@VARIANTS=o2 sh tests/run.sh "$(BUILD)" "$(BACKENDS)" "$(TESTS)" "" ""

# The suite built by the i686 (32-bit) and s390x (big-endian) cross
# compilers, run under qemu-user: every backend, and the alt builds.
# EVL_TEST_QEMU=1 lets the tests work around qemu-user's known limits,
# saying so; run.sh stops each binary after CROSS_TIMEOUT seconds.
CROSS_BINS := $(foreach a,$(CROSS),$(call bins,$(a),$(TESTS)) \
                $(addprefix $(BUILD)/$(a)alt-epoll/,$(TESTS)))
test-cross: $(CROSS_BINS)
	@EVL_TEST_QEMU=1 VARIANTS="$(CROSS_VARIANTS)" LOG=$(BUILD)/test-cross-log.txt \
	  $(foreach v,$(CROSS_VARIANTS),$(v)_QEMU=$($(v)_QEMU)) \
	  sh tests/run.sh "$(BUILD)" "$(BACKENDS)" "$(TESTS)" "" ""

# gcc and clang as C99 and C11, the header as C++, and the nm check.
compile-checks: $(BUILD)/checks.stamp
$(BUILD)/checks.stamp: evloop.h tests/impl.c tests/cpp_compile.cpp $(TEST_SRCS) $(wildcard examples/*.c) tests/nm_check.sh
	@mkdir -p $(BUILD)
	for cc in gcc clang; do for std in c99 c11; do \
	  for f in tests/impl.c $(TEST_SRCS) $(wildcard examples/*.c); do \
	    $$cc -std=$$std $(WARN) -fsyntax-only $$f || exit 1; \
	  done; \
	  for b in $(BACKENDS); do \
	    $$cc -std=$$std $(WARN) -fsyntax-only -DEVLOOP_BACKEND_$$(echo $$b | tr a-z A-Z) $(KQUEUE_CFLAGS) tests/impl.c || exit 1; \
	  done; done; done
	g++ -std=c++11 -Wall -Wextra -Werror -c tests/cpp_compile.cpp -o $(BUILD)/cpp_compile.o
	sh tests/nm_check.sh gcc
	@touch $@

# Windows: the tests cross-compiled with mingw-w64 into build/win/ and run
# under wine (tests/run_windows.sh: a fresh prefix under build/, each binary
# on iocp and select under a timeout), with the examples that build on
# Windows; the ones that stop by themselves run as smoke tests (not
# subprocess_date/_streams: they run `date`, which Windows lacks).
WIN_CC       ?= x86_64-w64-mingw32-gcc
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
	$(WIN_CC) $(WIN_FLAGS) -c $< -o $@
$(WIN_DIR)/%.exe: tests/%.c tests/test.h tests/net_test.h tests/proc_test.h evloop.h $(WIN_DIR)/impl.o
	$(WIN_CC) $(WIN_FLAGS) $< $(WIN_DIR)/impl.o -o $@ $(WIN_LIBS)
$(WIN_DIR)/examples/%.exe: examples/%.c evloop.h
	@mkdir -p $(@D)
	$(WIN_CC) $(WIN_FLAGS) $< -o $@ $(WIN_LIBS)
windows: $(WIN_EXES)
test-windows: $(WIN_EXES)
	@sh tests/run_windows.sh "$(BUILD)" "$(WIN_BACKENDS)" "$(TESTS)" "$(WIN_EXAMPLES_RUN)"

# ---- TLS (issue 14): self-contained, wired in by the two lines below ----
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
define tls_rules
$(BUILD)/$(1)-$(2)/tls-$(3)/impl.o: tests/impl.c evloop.h
	@mkdir -p $$(@D)
	$$($(1)_CC) $$($(1)_FLAGS) -D$$($(2)_MACRO) -D$$($(3)_TLS_MACRO) $$($(2)_CFLAGS) -c $$< -o $$@
$(BUILD)/$(1)-$(2)/tls-$(3)/t_tls: tests/t_tls.c tests/test.h tests/net_test.h evloop.h $(BUILD)/$(1)-$(2)/tls-$(3)/impl.o
	$$($(1)_CC) $$($(1)_FLAGS) -D$$($(3)_TLS_MACRO) $$($(2)_TFLAGS) $$($(2)_CFLAGS) $$< $(BUILD)/$(1)-$(2)/tls-$(3)/impl.o -o $$@ $$($(3)_TLS_LIBS) $$($(2)_LIBS) $(LIBS)
endef
$(foreach v,$(TLS_VARIANTS),$(foreach b,$(BACKENDS),$(foreach e,$(TLS_ENGINES),$(eval $(call tls_rules,$(v),$(b),$(e))))))
tls_bins = $(foreach v,$(1),$(foreach b,$(BACKENDS),$(foreach e,$(TLS_OK),$(BUILD)/$(v)-$(b)/tls-$(e)/t_tls)))
tls_run = @$(foreach e,$(TLS_MISSING),echo "skip TLS engine $(e): headers missing (install $($(e)_TLS_PKG))";) \
  VARIANTS="$(1)" LOG=$(BUILD)/test-tls-log.txt sh tests/run.sh "$(BUILD)" "$(BACKENDS)" "$(foreach e,$(TLS_OK),tls-$(e)/t_tls)" "" ""
# The TLS examples, per engine, against curl, openssl s_client / s_server.
TLS_EXAMPLES := https_server tls_client starttls
define tls_example_rules
$(BUILD)/examples-tls-$(1)/%: examples/%.c examples/http_server.c evloop.h
	@mkdir -p $$(@D)
	$(o2_CC) $(o2_FLAGS) -D$($(1)_TLS_MACRO) $(EX_FLAGS) $$< -o $$@ $($(1)_TLS_LIBS) $(EX_LIBS) $(LIBS)
endef
$(foreach e,$(TLS_ENGINES),$(eval $(call tls_example_rules,$(e))))
TLS_EXAMPLE_BINS := $(foreach e,$(TLS_OK),$(addprefix $(BUILD)/examples-tls-$(e)/,$(TLS_EXAMPLES)))
.PHONY: test-tls test-tls-quick tls-examples
test-tls: $(call tls_bins,$(TLS_VARIANTS)) tls-examples
	$(call tls_run,$(TLS_VARIANTS))
test-tls-quick: $(call tls_bins,o2) tls-examples
	$(call tls_run,o2)
tls-examples: $(TLS_EXAMPLE_BINS)
	@for e in $(TLS_OK); do sh tests/tls_examples.sh $(BUILD)/examples-tls-$$e $$e || exit 1; done
test: test-tls
test-quick: test-tls-quick

demo: examples
	@for e in $(DEMO_EXAMPLES); do echo "== examples/$$e"; $(BUILD)/examples/$$e || exit 1; done
	@echo "== the servers: $(BUILD)/examples/echo_server [--port N], $(BUILD)/examples/http_server [--port N] (Ctrl-C stops them)"

bench:
	@$(MAKE) -C bench

format:
	clang-format -i evloop.h tests/*.c tests/*.h tests/*.cpp examples/*.c bench/*.c

format-check:
	clang-format --dry-run --Werror evloop.h tests/*.c tests/*.h tests/*.cpp examples/*.c bench/*.c

clean:
	rm -rf $(BUILD)
	-$(MAKE) -C bench clean

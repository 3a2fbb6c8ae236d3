# cmkcert - per-tenant mTLS client certificates from OpenBao PKI.
#
#   make            build libcmkcert.a, cmkcert and cmkcertfs
#   make check      install what is missing, build, package, run every test
#   make demo       install what is missing, build, show a tenant's certificate at work
#   make bench      performance table
#   make install    install under $(DESTDIR)$(PREFIX)
#   make deb        Debian packages in $(BUILD)/deb/ (packaging/debian, debhelper)

VERSION := 0.1.0
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
CC ?= cc
BUILD ?= build
PYTHON ?= /usr/bin/python3

PKGS := libcurl libssl libcrypto inih jansson
FUSE_PKG := fuse3 libmicrohttpd
# Debian's mbedTLS 2.28 ships no pkg-config files; use them when present.
MBED_CFLAGS := $(shell pkg-config --cflags mbedtls mbedx509 mbedcrypto 2>/dev/null)
MBED_LIBS := $(shell pkg-config --libs mbedtls mbedx509 mbedcrypto 2>/dev/null || echo -lmbedtls -lmbedx509 -lmbedcrypto)
DB_LIBS := -ldb

WARN := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 $(WARN) -fstack-protector-strong -D_FORTIFY_SOURCE=2 \
	-Iinclude -Icore $(shell pkg-config --cflags $(PKGS)) $(MBED_CFLAGS)
LDLIBS := $(shell pkg-config --libs $(PKGS)) $(MBED_LIBS) $(DB_LIBS) -lpthread
FUSE_CFLAGS := $(shell pkg-config --cflags $(FUSE_PKG))
FUSE_LIBS := $(shell pkg-config --libs $(FUSE_PKG))
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)

ifeq ($(SAN),1)
BUILD := build/asan
CFLAGS := $(filter-out -D_FORTIFY_SOURCE=2 -O2,$(CFLAGS)) -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Library modules, in dependency order.
CORE := error log util crypto_mbedtls crypto_crl names config json http_curl http_openssl openbao openbao_parse openbao_pki seal store_env store_cond store_bdb store_keys store_pool store_token store_codec mounts audit audit_verify pool \
	probe_tls kmip lifecycle token_share issue op_check op_add op_renew op_revoke op_verify op_query opjson follow
CORE_OBJS := $(CORE:%=$(BUILD)/core/%.o)
LIB := $(BUILD)/libcmkcert.a

CLI_OBJS := $(BUILD)/cli/main.o $(BUILD)/cli/output.o $(BUILD)/cli/commands.o $(BUILD)/cli/cmd_lifecycle.o \
	$(BUILD)/cli/follow.o $(BUILD)/cli/cmd_pool.o
FUSE_OBJS := $(patsubst %,$(BUILD)/fusefs/%.o,main detach tree slot version ops file access lockmem auditq refusals watch notify announce sched keeper pin \
	notify_sd service control control_api metrics refill)

# Unit tests: tests/unit/test_<name>.c, linked with the objects they exercise.
BASE := error log util crypto_mbedtls
UNIT := error log util names config json crypto seal store store_scale pool mounts audit http openbao probe kmip lifecycle pins notify_sd
T_error := $(BASE)
T_log := $(BASE)
T_util := $(BASE)
T_names := $(BASE) names
T_config := $(BASE) names config
T_json := $(BASE) json
T_crypto := $(BASE) crypto_crl
T_seal := $(BASE) names config seal
T_store := $(BASE) names config store_env store_cond store_bdb store_keys store_pool store_token store_codec
T_store_scale := $(T_store)
T_pool := $(BASE) names config seal store_env store_cond store_bdb store_keys store_pool store_token store_codec pool
T_mounts := $(BASE) mounts
T_audit := $(BASE) names config json store_env store_cond store_bdb store_keys store_pool store_token store_codec audit audit_verify
T_http := $(BASE) http_curl http_openssl
T_openbao := $(BASE) names config json http_curl http_openssl openbao openbao_parse openbao_pki
T_probe := $(BASE) kmip probe_tls
T_kmip := $(BASE) kmip
T_lifecycle := $(CORE)
T_pins := $(BASE) names config seal
T_notify_sd := $(BASE)
# Unit tests of the daemon's own parts link these from fusefs/ as well.
TF_pins := pin version
TF_notify_sd := notify_sd
UNIT_BINS := $(UNIT:%=$(BUILD)/tests/test_%)

.PHONY: all deps check check-systemd unit unit-asan clients integration demo bench install deb clean
all: $(LIB) $(BUILD)/cmkcert $(BUILD)/cmkcertfs

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/fusefs/%.o: fusefs/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(FUSE_CFLAGS) -MMD -MP -c -o $@ $<

$(LIB): $(CORE_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/cmkcert: $(CLI_OBJS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/cmkcertfs: $(FUSE_OBJS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(FUSE_LIBS) $(LDLIBS)

.SECONDEXPANSION:
$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $$(addprefix $(BUILD)/core/,$$(addsuffix .o,$$(T_$$*))) \
		$$(addprefix $(BUILD)/fusefs/,$$(addsuffix .o,$$(TF_$$*)))
	$(CC) $(LDFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(LDLIBS)

deps:
	@packaging/install-deps.sh

unit: $(UNIT_BINS)
	@tests/unit/run.sh $(BUILD) $(UNIT)

unit-asan:
	@$(MAKE) --no-print-directory SAN=1 unit

# Test helpers run by the integration tests.
HELPERS := $(BUILD)/tests/die_inside_store $(BUILD)/tests/store_blob
$(BUILD)/tests/%: $(BUILD)/tests/helpers/%.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Real clients run by the integration tests (tests/clients/<name>/main.go): Go from Debian's
# golang-go, fsnotify from golang-github-fsnotify-fsnotify-dev, built offline in GOPATH mode
# (no modules, nothing downloaded) with the build cache inside $(BUILD).
GO ?= go
CLIENTS := loader reloader watcher ctlclient
CLIENT_BINS := $(CLIENTS:%=$(BUILD)/clients/%)
GO_ENV := GO111MODULE=off GOPROXY=off GOFLAGS= GOENV=off \
	GOPATH=$(abspath $(BUILD))/go/path:/usr/share/gocode GOCACHE=$(abspath $(BUILD))/go/cache
$(BUILD)/clients/%: tests/clients/%/main.go
	@mkdir -p $(@D)
	$(GO_ENV) $(GO) build -o $@ ./tests/clients/$*

clients: $(CLIENT_BINS)

integration: all $(HELPERS) $(CLIENT_BINS)
	$(PYTHON) -m pytest -q -p no:cacheprovider -m 'not systemd' tests/baosim tests/integration

# The installed unit under a running systemd (a machine that boots it): not part of make check.
check-systemd: all deb
	$(PYTHON) -m pytest -q -p no:cacheprovider -m systemd tests/integration

check: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory unit-asan
	@$(MAKE) --no-print-directory deb
	@$(MAKE) --no-print-directory integration

demo: deps
	@$(MAKE) --no-print-directory all
	@tests/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory all
	@bench/run.sh $(BUILD)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(PREFIX)/include/cmkcert \
		$(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)/etc/cmkcert $(DESTDIR)/lib/systemd/system $(DESTDIR)$(PREFIX)/lib/tmpfiles.d
	install -m 0755 $(BUILD)/cmkcert $(BUILD)/cmkcertfs $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(LIB) $(DESTDIR)$(LIBDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@VERSION@|$(VERSION)|' packaging/cmkcert.pc.in \
		>$(DESTDIR)$(LIBDIR)/pkgconfig/cmkcert.pc
	install -m 0644 include/cmkcert/*.h $(DESTDIR)$(PREFIX)/include/cmkcert/
	install -m 0644 docs/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 docs/*.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 0644 docs/*.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	# The unit names /usr/bin/cmkcertfs (the Debian package's path).
	sed -e 's|/usr/bin/cmkcertfs|$(PREFIX)/bin/cmkcertfs|' packaging/cmkcertfs.service \
		>$(DESTDIR)/lib/systemd/system/cmkcertfs.service
	install -m 0644 packaging/cmkcert.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/cmkcert.conf
	test -e $(DESTDIR)/etc/cmkcert/cmkcert.conf || install -m 0640 conf/cmkcert.conf $(DESTDIR)/etc/cmkcert/

# Debian packages (packaging/debian, debhelper), from a copy of the tree that
# the package build needs, into $(DEB_OUT): cmkcert_$(VERSION)_<arch>.deb and
# libcmkcert-dev_$(VERSION)_<arch>.deb.  The changelog's version must be $(VERSION).
DEB_OUT := $(BUILD)/deb
DEB_SRC := $(DEB_OUT)/cmkcert-$(VERSION)
deb: deps
	@v=$$(dpkg-parsechangelog -l packaging/debian/changelog -S Version); [ "$$v" = "$(VERSION)" ] || \
		{ echo "packaging/debian/changelog says $$v, the Makefile $(VERSION)" >&2; exit 1; }
	rm -rf $(DEB_OUT)
	mkdir -p $(DEB_SRC)
	cp -R Makefile README.md cli conf core docs fusefs include packaging $(DEB_SRC)/
	cp -R packaging/debian $(DEB_SRC)/debian
	cd $(DEB_SRC) && dpkg-buildpackage -b -us -uc -j2
	@ls $(DEB_OUT)/*.deb

clean:
	rm -rf build

-include $(shell find build -path build/deb -prune -o -name '*.d' -print 2>/dev/null)
.SECONDARY:

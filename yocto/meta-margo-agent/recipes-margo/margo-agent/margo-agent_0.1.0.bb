SUMMARY = "Margo device agent: desired state from OCI registries, Compose workloads through Podman"
DESCRIPTION = "margo-agent polls Margo ApplicationDeployment documents from an OCI registry and \
converges Compose workloads through Podman's REST API. One static, single-threaded binary."
HOMEPAGE = "https://example.invalid/margo-agent"
SECTION = "admin"
LICENSE = "Apache-2.0"
# Cargo.toml's license line (the crate carries its licence as SPDX id).
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=2507bd5f0713f05419cd2f22fa06fe62"

# The source: a git checkout of margo-agent. Set MARGO_AGENT_GIT / SRCREV for your fork, or
# build a local tree with externalsrc (the kas demo does: EXTERNALSRC:pn-margo-agent).
MARGO_AGENT_GIT ?= "git://example.invalid/margo-agent.git;protocol=https;branch=main"
SRC_URI = "${MARGO_AGENT_GIT};destsuffix=git"
SRCREV ?= "${AUTOREV}"
PV = "0.1.0+git"
# UNPACKDIR exists from styhead on (WORKDIR before); the git checkout lands in its git/.
S = "${@(d.getVar('UNPACKDIR') or d.getVar('WORKDIR')) + '/git'}"

# Crates listed from Cargo.lock by yocto/meta-margo-agent/scripts/gen-crates-inc.py
# (tests/run.sh fails when it is out of date).
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates systemd

# Which board profile (board/<name>/) provides the default config; empty = examples/config.yaml.
MARGO_AGENT_BOARD ??= ""

# tpm: the device key lives in a TPM 2.0 (cargo feature "tpm", links tpm2-tss).
PACKAGECONFIG ??= ""
PACKAGECONFIG[tpm] = ",,tpm2-tss,tpm2-tss"
CARGO_BUILD_FLAGS:append = "${@bb.utils.contains('PACKAGECONFIG', 'tpm', ' --features tpm', '', d)}"

# Cargo.toml's release profile strips; Yocto splits debug info into -dbg itself.
export CARGO_PROFILE_RELEASE_STRIP = "false"
export CARGO_PROFILE_RELEASE_DEBUG = "1"

SYSTEMD_SERVICE:${PN} = "margo-agent.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    # The unit file shared with non-Yocto installs.
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/examples/systemd/margo-agent.service ${D}${systemd_system_unitdir}/
    sed -i -e 's,/usr/bin/margo-agent,${bindir}/margo-agent,' \
        ${D}${systemd_system_unitdir}/margo-agent.service

    if ${@bb.utils.contains('PACKAGECONFIG', 'tpm', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}/margo-agent.service.d
        install -m 0644 ${UNPACKDIR_OR_WORKDIR}/tpm.conf ${D}${systemd_system_unitdir}/margo-agent.service.d/
    fi

    # Default config: the board profile's, else the documented example.
    install -d -m 0755 ${D}${sysconfdir}/margo-agent
    if [ -n "${MARGO_AGENT_BOARD}" ]; then
        install -m 0644 ${S}/board/${MARGO_AGENT_BOARD}/config.yaml ${D}${sysconfdir}/margo-agent/config.yaml
    else
        install -m 0644 ${S}/examples/config.yaml ${D}${sysconfdir}/margo-agent/config.yaml
    fi

    # The state directory (systemd's StateDirectory= creates it too, with mode 0700).
    install -d -m 0700 ${D}${localstatedir}/lib/margo-agent
}
UNPACKDIR_OR_WORKDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
SRC_URI += "file://tpm.conf"

CONFFILES:${PN} = "${sysconfdir}/margo-agent/config.yaml"
FILES:${PN} += "${systemd_system_unitdir}/margo-agent.service ${systemd_system_unitdir}/margo-agent.service.d ${localstatedir}/lib/margo-agent"

RDEPENDS:${PN} = "podman ca-certificates"

SUMMARY = "Demo image: a minimal systemd image with Podman and margo-agent"
LICENSE = "MIT"

inherit core-image

IMAGE_FEATURES += "ssh-server-dropbear"
IMAGE_INSTALL:append = " margo-agent podman ca-certificates"
# Podman's storage and the agent's state need room beyond the root file system's contents.
IMAGE_ROOTFS_EXTRA_SPACE = "1048576"

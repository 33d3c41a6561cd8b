#!/bin/sh
# ucarp --upscript for a carpfs master host: add the VIP and return at
# once. Everything slow (fencing, fetching the log, starting the master)
# is carpwatch's, which sees the address arrive through netlink.
#
# ucarp calls it as: vip-up.sh INTERFACE VIP [PREFIX]
# (PREFIX from ucarp's --xparam; 32 when absent).
set -eu
dev=${1:?usage: vip-up.sh INTERFACE VIP [PREFIX]}
vip=${2:?usage: vip-up.sh INTERFACE VIP [PREFIX]}
prefix=${3:-32}
if ! ip -o addr show dev "$dev" | grep -q " inet $vip/"; then
	ip addr add "$vip/$prefix" dev "$dev"
fi

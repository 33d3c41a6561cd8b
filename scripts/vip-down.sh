#!/bin/sh
# ucarp --downscript for a carpfs master host: remove the VIP and return
# at once; carpwatch sees it leave and stops the local master.
#
# ucarp calls it as: vip-down.sh INTERFACE VIP [PREFIX]
set -eu
dev=${1:?usage: vip-down.sh INTERFACE VIP [PREFIX]}
vip=${2:?usage: vip-down.sh INTERFACE VIP [PREFIX]}
prefix=${3:-32}
ip addr del "$vip/$prefix" dev "$dev" 2>/dev/null || true

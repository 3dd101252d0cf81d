# Shell helpers shared by scripts/demo.sh and scripts/bench.sh (sourced).

# veth_ns NS HOST_IF HOST_IP NS_IP PREFIXLEN: create netns NS joined to the
# host by a veth (HOST_IF on the host, eth0 inside) with a default route via
# the host side.
veth_ns() {
	local ns=$1 hif=$2 hip=$3 nip=$4 plen=$5
	ip netns add "$ns"
	ip link add "$hif" type veth peer name eth0 netns "$ns"
	ip addr add "$hip/$plen" dev "$hif"
	ip link set "$hif" up
	ip -n "$ns" addr add "$nip/$plen" dev eth0
	ip -n "$ns" link set lo up
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add default via "$hip"
}

# start_containerd DIR: a private containerd with its socket, root and state
# under DIR; its pid goes to DIR/containerd.pid and to CTD_PID. Waits until
# it answers.
start_containerd() {
	local d=$1
	cat >"$d/containerd.toml" <<EOT
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOT
	containerd --config "$d/containerd.toml" >"$d/containerd.log" 2>&1 &
	CTD_PID=$!
	echo "$CTD_PID" >"$d/containerd.pid"
	for _ in $(seq 100); do
		ctr --address "$d/containerd.sock" version >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	echo "containerd did not start (log: $d/containerd.log)" >&2
	return 1
}

# busybox_rootfs DIR NAMESERVER: a container root with busybox (every
# applet), passwd, group, hosts and resolv.conf.
busybox_rootfs() {
	local r=$1
	mkdir -p "$r"/{bin,etc,tmp,proc,sys,dev,root}
	cp /bin/busybox "$r/bin/busybox"
	for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
	printf 'root:x:0:\n' >"$r/etc/group"
	printf '127.0.0.1 localhost\n' >"$r/etc/hosts"
	printf 'nameserver %s\n' "$2" >"$r/etc/resolv.conf"
}

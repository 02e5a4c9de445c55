"""The network lab: named network namespaces, veth links and bridges over netlink, the records
that let `nskernel clean` remove what a dead kernel left, reachability probes, topologies."""

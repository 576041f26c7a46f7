"""``--datapath fast``: the batched data path, the same ESP-in-UDP bytes in fewer system calls.

    datapath   FastDatapath: the select loop's two ends (VnetTun, GsoUdp) with batched I/O
    offload    asking the kernel for TUN offloads, UDP_GRO and UDP_SEGMENT
    segment    TCP super-packets split and joined again (virtio_net_hdr), pure
    batch      UDP GSO and GRO batches and their control messages, pure

Only the CLI imports this package: the simple path (tunnel, client, server, tap) never does.
The loop is ``shell/tunnel.py``'s, so it reaches the cores as the simple path does: through
their batch entries, with many packets per call instead of one.
"""

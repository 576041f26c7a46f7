"""``--datapath fast``: the batched data path, the same ESP-in-UDP bytes in fewer system calls.

    loop       FastTunnel: the select loop of ``tunnel.py`` with batched I/O
    offload    asking the kernel for TUN offloads, UDP_GRO and UDP_SEGMENT
    segment    TCP super-packets split and joined again (virtio_net_hdr), pure
    batch      UDP GSO and GRO batches, pure

Only the CLI imports this package: the simple path (tunnel, client, server, tap) never does.
It talks to the cores through their one entry each way (``send_packets``,
``receive_datagrams``), as the simple path does with batches of one.
"""

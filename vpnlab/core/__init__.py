"""The sans-IO protocol core: bytes in, bytes and events out, time passed in as ``now``.

Nothing here touches a socket, a file descriptor, a process or the clock (a unit test parses
every import to hold this): the I/O shell one floor up (``vpnlab/shell/tunnel.py`` and the daemons)
moves the bytes, and ``tests/unit`` drives two cores against each other with a fake clock.

    errors, events, constants   the vocabulary: the exception tree, what the cores report, the
                                numbers of the design notes (2.5 s, 6 s, port 4500, ...)
    formats                     the wire-format interface that ``vpnlab/wire/`` implements
    packet                      IPv4/TCP/Ethernet field helpers, checksums, the MSS clamp
    session                     one peer: seal/open, keepalive, liveness, the state table
    client_core, server_core    ClientConnection and ServerConnection
    forwarding                  the server's routing decisions (Router) and where it forwards a
                                packet (IpForwarder by address, EthernetForwarder by MAC: TAP)
    ratelimit, bridge           the Hello rate limit; TAP mode's MAC-learning switch
"""

"""The lab's instruments: what a student measures the VPN with.

    capture         dumpcap inside a lab node; tshark stacks and fields
    decode          a capture as layers and fields with byte offsets (PDML), pyshark's async API
    ftp_endpoints   an FTP server (pyftpdlib) and a client (ftplib), nothing of the lab
    ftp             the FTP server and a transfer inside lab nodes, on the tunnel
    whoami          the web node's HTTP "who am I" service: the address a request came from
    loadclients     many load clients in one process: the real handshake and an ESP ping each

Their command lines are in ``vpnlab/cli/`` (``capture``, ``ftp``, ``whoami``).
"""

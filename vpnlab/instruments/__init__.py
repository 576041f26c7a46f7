"""The lab's instruments: what a student measures the VPN with.

    capture    dumpcap inside a lab node; tshark stacks and fields
    decode     a capture as layers and fields with byte offsets (PDML), pyshark's async API
    ftp        an FTP server on the tunnel (pyftpdlib) and a client (ftplib)
    whoami     the web node's HTTP "who am I" service: the address a request came from
"""

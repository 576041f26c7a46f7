"""The daemons' I/O shell: everything that touches the kernel around the pure cores.

``core/`` decides what a datagram means and ``wire/`` how its bytes look; this floor does
the I/O around them: the TUN/TAP device (``tun.py``, ``tap.py``, CreateTunDev), the socket
(``transport.py``, Init(PORT)), the routes and NAT (``routing.py``, SetRouting), the select
loop (``tunnel.py``, TunSelected/SockSelected, CleanUp), the two daemons (``client.py``,
``server.py``), their configuration (``peers.py``, ``keys.py``), status files (``report.py``)
and the kernel data plane (``xfrm.py``). ``fast/`` is the batched data path beside it.
"""

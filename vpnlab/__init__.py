"""vpnlab: a teaching UDP VPN (tun0 <-> UDP 4500) and the namespace lab it runs in.

The package follows the steps of the design notes (Init, CreateTunDev, Ifconfig,
ServerConnection, ClientConnection, SetRouting, TunSelected, SockSelected, CleanUp);
each step's docstring names it.
"""

__version__ = "0.1.0"

"""The course: what the notebooks in ``notebooks/`` use, and the experiments they run.

    notebook   CourseLab (the lab from a notebook, through subprocesses), checks
    figures    the notebooks' pictures: the topology, timelines, a packet's layers
    arp        the classic TAP experiment: answer the kernel's ARP request by hand
    iperf      iperf3 from r1 to web, for the two experiments below
    openvpn    OpenVPN's configuration, the benchmark's comparison
    bench      the benchmark against OpenVPN (``vpnlab bench``, ``scripts/bench.sh``)
    footprint  what a lab costs a class (``vpnlab bench --footprint``)
    classload  one server, a whole class of load clients (``vpnlab bench --clients``)
    meltdown   the TCP-meltdown experiment, UDP against TCP transport (``vpnlab meltdown``)

Their command lines are in ``vpnlab/cli/`` (``arp-experiment``, ``bench``, ``meltdown``).
"""

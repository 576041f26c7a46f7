"""The course: what the notebooks in ``notebooks/`` use, and the experiments they run.

    notebook   CourseLab (the lab from a notebook, through subprocesses), check/predict/explain
    exercises  every exercise: its answer's type, a hint, live (read from the lab) or a fixed fact
    grading    judge (live answers against a LabView), the checks, nbgrader's grade cells
    labview    LabView: what judging needs of a lab (prefix, exec_in, drawn)
    progress   the student's attempts file (practice, one JSON line per try), for ``--report``
    figures    the notebooks' pictures: the topology, timelines, a packet's layers, MTU budget
    diagrams   explanatory drawings: a ping's path, a sequence, the liveness window, prefixes
    mytunnel   notebook 12: the ends (tun0, UDP 4500) of the student's own tunnel, observed
    arp        the classic TAP experiment: answer the kernel's ARP request by hand
    iperf      iperf3 from r1 to web, for the two experiments below
    openvpn    OpenVPN's configuration, the benchmark's comparison
    bench      the benchmark against OpenVPN (``vpnlab bench``, ``scripts/bench.sh``)
    footprint  what a lab costs a class (``vpnlab bench --footprint``)
    classload  one server, a whole class of load clients (``vpnlab bench --clients``)
    classhub   a class at once on a real hub: N Unix users log in and run notebook 00
               (``vpnlab bench --class-hub``)
    meltdown   the TCP-meltdown experiment, UDP against TCP transport (``vpnlab meltdown``)
    check      ``vpnlab check``: the end-to-end checks of a lab (a troubleshooting lab's repair)
    student_copy  a student's ~/course brought up to date at each start of their hub server
    report     ``vpnlab check --report``: a student's progress per SEED VPN lab task

Their command lines are in ``vpnlab/cli/`` (``arp-experiment``, ``bench``, ``meltdown``,
``check``).
"""

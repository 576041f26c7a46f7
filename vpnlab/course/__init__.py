"""The course: what the notebooks in ``notebooks/`` use, and the experiments they run.

    notebook   CourseLab (the lab from a notebook, through subprocesses), checks, figures
    bench      the benchmark against OpenVPN (``scripts/bench.sh``)
    meltdown   the TCP-meltdown experiment, UDP against TCP transport (``scripts/meltdown.sh``)
    arp        the classic TAP experiment: answer the kernel's ARP request by hand
"""

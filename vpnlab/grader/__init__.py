"""The hub's grader: a service, running as its own user, that checks a student's live lab from
outside the student's processes and keeps attempts and results where no student can reach.

    enter.py     the only privileged part: enter a student's lab (nsenter), and nothing else
    store.py     the SQLite store (attempts, faults drawn, the draw's secret), 0600
    judging.py   what is judged, how tries are limited
    service.py   the HTTP service (hub tokens identify the student), the privilege split
    client.py    what a student's notebook or shell calls
    report.py    the instructor's report from the store: CSV and a plot
"""

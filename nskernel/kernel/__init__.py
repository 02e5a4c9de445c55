"""The Isolated Python kernel: the process chain below the Jupyter server (launcher,
supervisor with its relay, init, kernel app), its kernelspecs, provisioner, ids and doctor.

Kept empty: the supervisor imports this package in a site-less interpreter."""

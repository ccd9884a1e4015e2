"""The host data path side by side: the transfer engine against the pipelines users build
instead, on the same source file and sink, over loopback and over wireguard-go between two
network namespaces. ``python -m bench.datapath`` runs it; ``bench.run_all`` folds it into the
suite's results."""

from bench.zfs_peers.suite import main

main()

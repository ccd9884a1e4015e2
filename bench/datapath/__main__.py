from bench.datapath.suite import main

main()

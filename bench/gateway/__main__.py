from bench.gateway.suite import main

main()

from bench.migration.suite import main

main()

from services.pod_config.program import main

main()

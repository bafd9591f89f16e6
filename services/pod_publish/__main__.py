from services.pod_publish.program import main

main()

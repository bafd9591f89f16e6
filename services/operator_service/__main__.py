from services.operator_service.server import main

main()

from services.operator_engine.server import main

main()

from services.provider.server import main

main()

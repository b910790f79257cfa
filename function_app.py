"""The Azure Functions app (Python v2 model): registers the blueprints of `functions/`."""

import azure.functions as func

from functions.enforce import bp as enforce

app = func.FunctionApp()
app.register_functions(enforce)

"""The Azure Functions app (Python v2 model): registers the blueprints of `functions/`."""

import azure.functions as func

from functions.doctor import bp as doctor
from functions.enforce import bp as enforce
from functions.provision import bp as provision
from functions.readiness import bp as readiness

app = func.FunctionApp()
app.register_functions(enforce)
app.register_functions(provision)
app.register_functions(doctor)
app.register_functions(readiness)

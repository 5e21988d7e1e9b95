"""Host-side tools the model calls: calculator, search, sandboxed Python, functions.

Importing this package registers every tool; `get_tool(name, **kwargs)` builds
one. Heavy dependencies (bm25s, jsonschema) are imported only when used.
"""

from swirl_jax.tools.base import (
    ERROR_PREFIX,
    Tool,
    ToolCall,
    format_call,
    format_result,
    get_tool,
    get_tool_class,
    is_error,
    parse_call,
    register_tool,
    tool_names,
)
from swirl_jax.tools.calculator import (
    Calculator,
    CalculatorError,
    evaluate,
    evaluate_number,
)
from swirl_jax.tools.code import PythonTool
from swirl_jax.tools.functions import (
    FunctionCallingTool,
    FunctionSpec,
    calls_match,
    is_parse_error,
    parse_calls,
    register_function,
    unregister_function,
    validate_call,
)
from swirl_jax.tools.sandbox import (
    SandboxResult,
    run_python,
    run_python_batch,
    sandbox_defences,
)
from swirl_jax.tools.search import Article, SearchTool

"""The symbolic layer: derive, print, lower and verify infinite-width equations.

- `derive(arch, training=..., outputs=C)` → `Derivation`: NNGP/NTK layer recursions (`LayerMap`: printed IR equation plus
  the scalar SymPy map), the μP DMFT single-site process (or the lazy dynamics for "ntk"),
  ``.latex()`` (a standalone document) and ``str()`` (terminal text); the loss of ``training``
  and the number of outputs (`Outputs`) set the error signal Δ = y − f or y − softmax(f).
- The IR node classes (`Field`, `Kernel`, `Response`, `ErrorSignal`, `Act`, `Expect`,
  `GaussianProcess`, `TimeIntegral`, `DataSum`, `Scalar`, `Equation`, …); for the discrete rules
  "gd" / "sgd" (`derive(arch, training=...)`) the step sum `StepSum` η0 Σ_{s<k}, the batch
  weight `BatchWeight` ω and the matrix closed form `MatrixForm`.
- `lower_recursion` / `lower_expression`: the same objects compiled to JAX.
- `verify`, `verify_dual`, `verify_quantity`: proof, 30-digit numerics or a counterexample.
"""

from ._derive import (
    LAYER_SYMBOLS_DOC as LAYER_SYMBOLS_DOC,
    Dense as Dense,
    Derivation as Derivation,
    DMFTSystem as DMFTSystem,
    LayerMap as LayerMap,
    Outputs as Outputs,
    derive as derive,
    program as program,
)
from ._documents import (
    BlockResult as BlockResult,
    VerifyBlock as VerifyBlock,
    check_block as check_block,
    check_document as check_document,
    document_blocks as document_blocks,
    extract_blocks as extract_blocks,
)
from ._ir import (
    Act as Act,
    Add as Add,
    BatchWeight as BatchWeight,
    DataSum as DataSum,
    DualKernel as DualKernel,
    Equation as Equation,
    ErrorSignal as ErrorSignal,
    Expect as Expect,
    Field as Field,
    FuncDeriv as FuncDeriv,
    GaussianProcess as GaussianProcess,
    Kernel as Kernel,
    MatrixForm as MatrixForm,
    Mul as Mul,
    Node as Node,
    Notation as Notation,
    Response as Response,
    Scalar as Scalar,
    StepSum as StepSum,
    TimeDerivative as TimeDerivative,
    TimeIntegral as TimeIntegral,
    eta0 as eta0,
    gamma0 as gamma0,
    num_train as num_train,
    step_k as step_k,
    substitute as substitute,
    time_derivative as time_derivative,
)
from ._lower import (
    CausalQuadrature as CausalQuadrature,
    LoweredExpression as LoweredExpression,
    LoweredRecursion as LoweredRecursion,
    field_velocity as field_velocity,
    lambdify_jax as lambdify_jax,
    leaf_key as leaf_key,
    lower_expression as lower_expression,
    lower_matrix_form as lower_matrix_form,
    lower_recursion as lower_recursion,
)
from ._printing import braces_balanced as braces_balanced
from ._verify import (
    COVARIANCE_DOMAIN as COVARIANCE_DOMAIN,
    Domain as Domain,
    Verdict as Verdict,
    parse_expression as parse_expression,
    parse_latex_expression as parse_latex_expression,
    verify as verify,
    verify_dual as verify_dual,
    verify_quantity as verify_quantity,
)

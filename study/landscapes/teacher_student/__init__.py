"""L1, the two-layer ReLU teacher-student landscape, with everything that is its own: the population
formulas (``population``), the landscape (``landscape``), its compiled descent loops (``kernel`` on CPU
threads, ``cuda_kernel`` on a CUDA device; both imported only when asked for), its spurious-minimum
families (``families``) and its report sections (``report``, reached only through the registry)."""

from study.landscapes.teacher_student.landscape import (
    TWO_PI,
    TeacherStudent,
    TeacherStudentConfig,
    teacher_matrix,
)
from study.landscapes.teacher_student.population import (
    differentiability_margins,
    population_grad,
    population_hessian,
    population_loss,
)

__all__ = [
    "TWO_PI",
    "TeacherStudent",
    "TeacherStudentConfig",
    "differentiability_margins",
    "population_grad",
    "population_hessian",
    "population_loss",
    "teacher_matrix",
]

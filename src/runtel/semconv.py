"""Every attribute and metric name runtel emits, and its unit.

OpenTelemetry semantic-convention strings are pinned here (copied from semantic-conventions v1.44.0,
not imported from the incubating package, which moves). Names that have no convention live under
the ``runtel.`` prefix. No other module spells an attribute or metric name as a literal.
"""

from __future__ import annotations

from typing import Final

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.44.0"
INSTRUMENTATION_SCOPE: Final = "runtel"

# --- resource / process (semconv) ---------------------------------------------------------------
SERVICE_NAME: Final = "service.name"
SERVICE_VERSION: Final = "service.version"
SERVICE_INSTANCE_ID: Final = "service.instance.id"
HOST_NAME: Final = "host.name"
HOST_ID: Final = "host.id"
HOST_ARCH: Final = "host.arch"
HOST_CPU_MODEL_NAME: Final = "host.cpu.model.name"
HOST_CPU_VENDOR_ID: Final = "host.cpu.vendor.id"
OS_TYPE: Final = "os.type"
OS_NAME: Final = "os.name"
OS_VERSION: Final = "os.version"
OS_DESCRIPTION: Final = "os.description"
PROCESS_PID: Final = "process.pid"
PROCESS_PARENT_PID: Final = "process.parent_pid"
PROCESS_CREATION_TIME: Final = "process.creation.time"
PROCESS_EXECUTABLE_NAME: Final = "process.executable.name"
PROCESS_EXECUTABLE_PATH: Final = "process.executable.path"
PROCESS_COMMAND: Final = "process.command"
PROCESS_COMMAND_ARGS: Final = "process.command_args"
PROCESS_OWNER: Final = "process.owner"
PROCESS_WORKING_DIRECTORY: Final = "process.working_directory"
PROCESS_RUNTIME_NAME: Final = "process.runtime.name"
PROCESS_RUNTIME_VERSION: Final = "process.runtime.version"
PROCESS_RUNTIME_DESCRIPTION: Final = "process.runtime.description"
CONTAINER_ID: Final = "container.id"
K8S_POD_NAME: Final = "k8s.pod.name"
K8S_NAMESPACE_NAME: Final = "k8s.namespace.name"
K8S_NODE_NAME: Final = "k8s.node.name"
VCS_REPOSITORY_URL_FULL: Final = "vcs.repository.url.full"
VCS_REF_HEAD_REVISION: Final = "vcs.ref.head.revision"
VCS_REF_HEAD_NAME: Final = "vcs.ref.head.name"
VCS_REF_HEAD_TYPE: Final = "vcs.ref.head.type"

# --- code / errors (semconv) --------------------------------------------------------------------
CODE_FUNCTION_NAME: Final = "code.function.name"
CODE_FILE_PATH: Final = "code.file.path"
CODE_LINE_NUMBER: Final = "code.line.number"
ERROR_TYPE: Final = "error.type"

# --- runtel's own span attributes ---------------------------------------------------------------
RUN_ID: Final = "runtel.run.id"
RUN_NAME: Final = "runtel.run.name"
RUN_PARENT_ID: Final = "runtel.run.parent_id"
SPAN_KIND: Final = "runtel.kind"  # "run" | "block" | "function"
KIND_RUN: Final = "run"
KIND_BLOCK: Final = "block"
KIND_FUNCTION: Final = "function"
STAGE: Final = "runtel.stage"
#: true on a span that was still open when its process died (recovered from its last checkpoint: see rundir.journal)
SPAN_UNENDED: Final = "runtel.span.unended"
TAG_PREFIX: Final = "runtel.tag."
CONFIG_PREFIX: Final = "config."
ATTRIBUTE_TRUNCATED: Final = "runtel.truncated"
TELEMETRY_LEVEL: Final = "runtel.telemetry"
SEED: Final = "runtel.seed"
GIT_DIRTY: Final = "runtel.git.dirty"
PACKAGES_COUNT: Final = "runtel.packages.count"
PACKAGES_HASH: Final = "runtel.packages.hash"
PARAM_PREFIX: Final = "runtel.param."
RETURN_VALUE: Final = "runtel.return"
#: set on a traced call whose capture was asked for but not taken (past ``capture_limit``)
CAPTURE_SKIPPED: Final = "runtel.capture.skipped"
USAGE_PREFIX: Final = "runtel.usage."
ARTIFACT_EVENT: Final = "runtel.artifact"
ARTIFACT_PREFIX: Final = "runtel.artifact."
SOURCE_EVENT: Final = "runtel.source"
SOURCE_PREFIX: Final = "runtel.source."
METADATA_PREFIX: Final = "runtel.metadata."
RESULT_PREFIX: Final = "runtel.result."  # final results on the run span; series as gauges of this name
STEP: Final = "runtel.step"  # the step of a series point (run.log)

# --- process / system metrics (semconv) ---------------------------------------------------------
PROCESS_CPU_TIME: Final = "process.cpu.time"
PROCESS_CPU_UTILIZATION: Final = "process.cpu.utilization"
PROCESS_MEMORY_USAGE: Final = "process.memory.usage"
PROCESS_MEMORY_VIRTUAL: Final = "process.memory.virtual"
PROCESS_THREAD_COUNT: Final = "process.thread.count"
SYSTEM_CPU_UTILIZATION: Final = "system.cpu.utilization"
SYSTEM_MEMORY_USAGE: Final = "system.memory.usage"
SYSTEM_MEMORY_UTILIZATION: Final = "system.memory.utilization"
SYSTEM_MEMORY_LIMIT: Final = "system.memory.limit"
SYSTEM_PAGING_USAGE: Final = "system.paging.usage"
CPU_MODE: Final = "cpu.mode"
SYSTEM_MEMORY_STATE: Final = "system.memory.state"
SYSTEM_PAGING_STATE: Final = "system.paging.state"

# --- hardware / GPU / energy metrics (semconv hw.*) ---------------------------------------------
HW_GPU_UTILIZATION: Final = "hw.gpu.utilization"
HW_GPU_MEMORY_USAGE: Final = "hw.gpu.memory.usage"
HW_GPU_MEMORY_LIMIT: Final = "hw.gpu.memory.limit"
HW_GPU_MEMORY_UTILIZATION: Final = "hw.gpu.memory.utilization"
HW_ENERGY: Final = "hw.energy"
HW_POWER: Final = "hw.power"
HW_TEMPERATURE: Final = "hw.temperature"
HW_ID: Final = "hw.id"
HW_NAME: Final = "hw.name"
HW_TYPE: Final = "hw.type"
HW_VENDOR: Final = "hw.vendor"
HW_MODEL: Final = "hw.model"
HW_DRIVER_VERSION: Final = "hw.driver_version"
HW_PARENT: Final = "hw.parent"
HW_GPU_TASK: Final = "hw.gpu.task"
HW_SENSOR_LOCATION: Final = "hw.sensor_location"

# --- runtel's own metric attributes (no convention exists) --------------------------------------
SCOPE_ATTR: Final = "runtel.process.scope"  # "main" | "descendants" | "combined"
MEMORY_KIND: Final = "runtel.memory.kind"  # "rss" | "uss" | "pss"
ENERGY_ESTIMATED: Final = "runtel.energy.estimated"
ENERGY_SOURCE: Final = "runtel.energy.source"
RUNTEL_PROCESS_GPU_MEMORY: Final = "runtel.process.gpu.memory.usage"
RUNTEL_EMISSIONS: Final = "runtel.emissions"
RUNTEL_PROCESS_COUNT: Final = "runtel.process.count"

# --- units (UCUM) -------------------------------------------------------------------------------
UNIT_BYTES: Final = "By"
UNIT_SECONDS: Final = "s"
UNIT_RATIO: Final = "1"
UNIT_JOULES: Final = "J"
UNIT_WATTS: Final = "W"
UNIT_CELSIUS: Final = "Cel"
UNIT_THREADS: Final = "{thread}"
UNIT_PROCESSES: Final = "{process}"
UNIT_GRAMS_CO2: Final = "g"

# --- environment (added by env capture) ---------------------------------------------------------
# No convention exists for batch-scheduler and distributed-rank facts, so they live under runtel.*.
SLURM_JOB_ID: Final = "runtel.slurm.job.id"
SLURM_JOB_NAME: Final = "runtel.slurm.job.name"
SLURM_ARRAY_JOB_ID: Final = "runtel.slurm.array.job.id"
SLURM_ARRAY_TASK_ID: Final = "runtel.slurm.array.task.id"
SLURM_NODE_LIST: Final = "runtel.slurm.node_list"
SLURM_PARTITION: Final = "runtel.slurm.partition"
SLURM_NTASKS: Final = "runtel.slurm.ntasks"
SLURM_PROC_ID: Final = "runtel.slurm.proc_id"
RANK_GLOBAL: Final = "runtel.rank.global"
RANK_LOCAL: Final = "runtel.rank.local"
RANK_WORLD_SIZE: Final = "runtel.rank.world_size"
RANK_SOURCE: Final = "runtel.rank.source"  # "torch" | "ompi" | "pmi"
PYTHON_ENV: Final = "runtel.python.env"  # venv / conda environment name

# --- sampling (added by sampler) ---------------------------------------------------------------
CPU_MODE_USER: Final = "user"
CPU_MODE_SYSTEM: Final = "system"
MEMORY_STATE_USED: Final = "used"
MEMORY_STATE_FREE: Final = "free"
HW_TYPE_GPU: Final = "gpu"
HW_TYPE_CPU: Final = "cpu"
HW_GPU_TASK_GENERAL: Final = "general"
SCOPE_MAIN: Final = "main"
SCOPE_DESCENDANTS: Final = "descendants"
SCOPE_COMBINED: Final = "combined"
MEMORY_KIND_RSS: Final = "rss"
MEMORY_KIND_USS: Final = "uss"
MEMORY_KIND_PSS: Final = "pss"
# process.cpu.utilization is emitted twice: the semconv value (fraction of all logical CPUs) without this
# attribute, and runtel's sum-of-cores value (2.0 = two busy cores) with runtel.cpu.utilization.basis=cores.
CPU_UTILIZATION_BASIS: Final = "runtel.cpu.utilization.basis"  # "cores"
CPU_UTILIZATION_BASIS_CORES: Final = "cores"
# runtel.usage.* span attributes (one set per run/block window; units in docs/metrics.md)
USAGE_SAMPLES: Final = "runtel.usage.samples"
USAGE_DURATION: Final = "runtel.usage.duration"
USAGE_CPU_TIME: Final = "runtel.usage.cpu.time"
USAGE_CPU_UTILIZATION_MAX: Final = "runtel.usage.cpu.utilization.max"
USAGE_CPU_UTILIZATION_MEAN: Final = "runtel.usage.cpu.utilization.mean"
USAGE_CPU_HARDWARE_UTILIZATION_MAX: Final = "runtel.usage.cpu.hardware_utilization.max"
USAGE_CPU_HARDWARE_UTILIZATION_MEAN: Final = "runtel.usage.cpu.hardware_utilization.mean"
USAGE_SYSTEM_CPU_UTILIZATION_MAX: Final = "runtel.usage.system.cpu.utilization.max"
USAGE_SYSTEM_CPU_UTILIZATION_MEAN: Final = "runtel.usage.system.cpu.utilization.mean"
USAGE_MEMORY_PREFIX: Final = "runtel.usage.memory."  # + "{rss,uss,pss}.max.{main,descendants,combined}"
USAGE_THREADS_PREFIX: Final = "runtel.usage.threads.max."  # + "{main,descendants,combined}"
USAGE_PROCESSES_MAX: Final = "runtel.usage.processes.max"
USAGE_SYSTEM_MEMORY_USED_MAX: Final = "runtel.usage.system.memory.used.max"
USAGE_GPU_COUNT: Final = "runtel.usage.gpu.count"
USAGE_GPU_MEMORY_USED_MAX: Final = "runtel.usage.gpu.memory.used.max"
USAGE_GPU_MEMORY_TREE_MAX: Final = "runtel.usage.gpu.memory.tree.max"
USAGE_GPU_UTILIZATION_MAX: Final = "runtel.usage.gpu.utilization.max"
USAGE_GPU_UTILIZATION_MEAN: Final = "runtel.usage.gpu.utilization.mean"
USAGE_GPU_POWER_MEAN: Final = "runtel.usage.gpu.power.mean"
USAGE_ENERGY_CPU: Final = "runtel.usage.energy.cpu"
USAGE_ENERGY_GPU: Final = "runtel.usage.energy.gpu"
USAGE_ENERGY_TOTAL: Final = "runtel.usage.energy.total"
USAGE_ENERGY_ESTIMATED: Final = "runtel.usage.energy.estimated"
USAGE_ENERGY_SOURCES: Final = "runtel.usage.energy.sources"
#: on a run span whose CPU energy is estimated: joules per CPU-second. A span with ``cpu.time`` and no
#: ``energy.total`` (a block no sample fell into, no energy counter) used ``cpu.time`` x this much, estimated
ENERGY_CPU_JOULES_PER_CPU_S: Final = "runtel.energy.cpu.joules_per_cpu_second"
USAGE_EMISSIONS: Final = "runtel.usage.emissions"
USAGE_CARBON_INTENSITY: Final = "runtel.usage.carbon_intensity"
USAGE_COUNTERS: Final = "runtel.usage.counters"  # "edges": CPU time and energy are edge-counter differences
USAGE_THREAD_CPU_TIME: Final = "runtel.usage.thread.cpu.time"
USAGE_CPU_TIME_CHILDREN: Final = "runtel.usage.cpu.time.children"  # child processes inside the window: reaped + live
#: true on a block whose live descendants could not be read at an edge (more than 16, or unreadable): its
#: ``cpu.time.children`` holds only the children reaped inside it
USAGE_CPU_TIME_CHILDREN_PARTIAL: Final = "runtel.usage.cpu.time.children.partial"
USAGE_RSS_PEAK_EXACT: Final = "runtel.usage.memory.rss.max.exact"
USAGE_FLOORS: Final = "runtel.usage.floors"  # what raised CPU time/energy to a floor ("wait4", "child runs")
USAGE_RSS_MAX_MAIN: Final = "runtel.usage.memory.rss.max.main"
USAGE_RSS_MAX_COMBINED: Final = "runtel.usage.memory.rss.max.combined"
USAGE_USS_MAX_MAIN: Final = "runtel.usage.memory.uss.max.main"
USAGE_USS_MAX_COMBINED: Final = "runtel.usage.memory.uss.max.combined"
USAGE_PSS_MAX_MAIN: Final = "runtel.usage.memory.pss.max.main"
USAGE_PSS_MAX_COMBINED: Final = "runtel.usage.memory.pss.max.combined"
# request spans of a service (recording/service.py; docs/services.md says what the CPU time counts)
REQUEST_CPU_TIME: Final = "runtel.request.cpu.time"  # s, this request's own CPU time, never shared
REQUEST_CONCURRENCY: Final = "runtel.request.concurrency"  # requests in flight when it started, itself included

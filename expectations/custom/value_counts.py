"""ExpectColumnValueCountsToBeAtLeast: each listed value occurs in at least `min_count` rows."""

from typing import Any, ClassVar

from great_expectations.expectations.expectation import ColumnAggregateExpectation
from great_expectations.validator.metric_configuration import MetricConfiguration


class ExpectColumnValueCountsToBeAtLeast(ColumnAggregateExpectation):
    """Every value in `value_set` occurs in at least `min_count` rows of the column (e.g. rows per class)."""

    value_set: list[Any]
    min_count: int

    metric_dependencies: ClassVar[tuple[str, ...]] = ("column.value_counts",)
    success_keys: ClassVar[tuple[str, ...]] = ("value_set", "min_count")
    args_keys: ClassVar[tuple[str, ...]] = ("column", "value_set", "min_count")

    def get_validation_dependencies(self, execution_engine: Any = None, runtime_configuration: Any = None) -> Any:
        """Ask for the column's value counts (the metric needs explicit sort/collate arguments)."""
        dependencies = super().get_validation_dependencies(execution_engine, runtime_configuration)
        current = dependencies.get_metric_configuration("column.value_counts")
        dependencies.set_metric_configuration(
            "column.value_counts",
            MetricConfiguration(
                "column.value_counts",
                metric_domain_kwargs=current.metric_domain_kwargs,
                metric_value_kwargs={"sort": "value", "collate": None},
            ),
        )
        return dependencies

    def _validate(
        self, metrics: dict[str, Any], runtime_configuration: Any = None, execution_engine: Any = None
    ) -> dict:
        counts = metrics["column.value_counts"]
        observed = {str(value): int(count) for value, count in counts.items()}
        short = {str(v): observed.get(str(v), 0) for v in self.value_set if observed.get(str(v), 0) < self.min_count}
        return {"success": not short, "result": {"observed_value": observed, "details": {"below_minimum": short}}}

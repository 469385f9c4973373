"""Work that runs beside requests, in the API and in every worker: the job reaper."""

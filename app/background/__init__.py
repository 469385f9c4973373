"""Work that runs beside requests, in the API and in every worker: the job reaper, and the
periodic thread it and the workers' heartbeats run on."""
